"""Score a ``ray.data.Dataset`` with lmscore (``pip install 'lmscore-client[ray]'``).

>>> import ray
>>> from lmscore_client.ray import Servers, score_dataset
>>> ds = ray.data.read_json("corpus/*.jsonl")
>>> scored = score_dataset(ds, Servers(["http://10.0.0.5:8000", "http://10.0.0.6:8000"]))
>>> scored.write_parquet("scored/")

``Servers`` sends to running lmscore servers (HTTP or gRPC) with failover; ``InProcess``
loads the engine inside each Ray actor (a GPU per actor where there are GPUs). Both add the
API's score columns (``ppl``, ``mean_nll``, ``bits_per_byte``, ``bits_per_char``, ...), keep
every input column (an id column included) and the rows' order, and put a refused row's
error in ``score_error`` instead of failing the job.
"""

from __future__ import annotations

from lmscore_client.ray.columns import RowFormat, score_schema
from lmscore_client.ray.dataset import score_dataset
from lmscore_client.ray.scorer import InProcess, InProcessScorer, RemoteScorer
from lmscore_client.ray.senders import Servers

__all__ = [
    "InProcess",
    "InProcessScorer",
    "RemoteScorer",
    "RowFormat",
    "Servers",
    "score_dataset",
    "score_schema",
]
