"""``score_dataset``: the scorers wired into ``Dataset.map_batches`` with an actor pool."""

from __future__ import annotations

import ray.data

from lmscore_client.build import ScoreOptions
from lmscore_client.ray.columns import RowFormat
from lmscore_client.ray.scorer import InProcess, InProcessScorer, RemoteScorer, check_columns
from lmscore_client.ray.senders import Servers


def score_dataset(
    ds: ray.data.Dataset,
    target: Servers | InProcess,
    *,
    options: ScoreOptions | None = None,
    rows: RowFormat | None = None,
    actors: int = 1,
    batch_size: int = 256,
    rows_per_request: int = 32,
    concurrency: int = 4,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    preserve_order: bool = True,
) -> ray.data.Dataset:
    """``ds`` with the score columns added (lazy, like every Ray Data transform).

    ``actors`` scorers each take blocks of ``batch_size`` rows and keep ``concurrency``
    requests of ``rows_per_request`` rows in flight. Each actor reserves ``num_cpus`` and
    ``num_gpus`` (give in-process scorers ``num_gpus=1`` on GPU nodes; a remote scorer
    needs little CPU, as the servers do the work). Ray sets an actor's torch threads
    (``OMP_NUM_THREADS``) to its ``num_cpus``: give an in-process scorer the cores it may use. Rows keep their order within a block
    always, and across blocks with ``preserve_order`` (Ray Data's execution option, set on
    this dataset's context; turn it off when order does not matter, for more overlap).
    """
    options = check_columns(options or ScoreOptions())  # on the driver, before any actor
    if preserve_order:
        ds.context.execution_options.preserve_order = True
    scorer: type[RemoteScorer] | type[InProcessScorer]
    scorer = RemoteScorer if isinstance(target, Servers) else InProcessScorer
    return ds.map_batches(
        scorer,
        fn_constructor_kwargs={
            "options": options,
            "rows": rows or RowFormat(),
            "rows_per_request": rows_per_request,
            "concurrency": concurrency,
            "servers" if isinstance(target, Servers) else "target": target,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
