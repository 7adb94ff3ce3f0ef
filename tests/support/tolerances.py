"""Numeric tolerances the tests assert, taken from the public contract, in one place.

CONTRACT.md and the README promise:

- Scores do not depend on what else is in the batch: in float32 a text's scores alone and in a
  batch agree to 1e-4 relative, whatever the batch layout (padded, ragged/packed, shared
  prefix, split across batches or requests). -> ``BATCH_INVARIANCE_REL``
- The float32 transformers backend's PPL equals plain transformers to 1e-3 relative.
  -> ``TRANSFORMERS_PPL_REL``

Matmul reductions round differently with the batch shape, the layout and the CPU (Intel AMX
and AMD Zen 5 differ in the 6th-7th significant digit), so a test that compares two
different forward passes over the model (batched vs alone, one request vs another, REST vs
gRPC, one layout, window or code path vs another, or a batched forward vs a lone float64
reference) asserts these tolerances, never one machine's rounding. The same computed floats
read twice (a token's logprob and its own top-1 entry, token logprobs summed vs
``sum_logprob``) stay exact or tight, and so do maths checks of one lone computation against
float64.

This folder is on ``sys.path`` through ``pythonpath`` in pyproject.toml's pytest settings
(``from tolerances import ...``). It is its own folder because putting ``tests/`` itself on
``sys.path`` would make ``tests/vllm`` importable as a namespace package named ``vllm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BATCH_INVARIANCE_REL = 1e-4
"""float32 scores of two different forward passes over the same text agree to this, relative."""


def ppl_rel(ppl: float | None) -> float:
    """The relative tolerance of a PPL, from ``BATCH_INVARIANCE_REL`` on its mean NLL.

    PPL = exp(mean NLL), so an error e in the mean NLL (nats) moves the PPL by e relative:
    the contract's 1e-4 relative on a mean NLL of 5 nats is 5e-4 relative on the PPL.
    """
    mean_nll = abs(np.log(ppl)) if ppl else 0.0
    return BATCH_INVARIANCE_REL * max(1.0, float(mean_nll))


BATCH_INVARIANCE_ABS = 1e-4
"""Absolute floor (nats) next to ``BATCH_INVARIANCE_REL``, for values near 0.

A logprob is a logit minus a log-sum-exp: its float32 rounding is absolute, on the scale of
the logits, not relative to the logprob. A confident token (logprob near 0) cannot be held to
1e-4 of itself; the floor reads the contract's 1e-4 against a 1-nat scale.
"""

TRANSFORMERS_PPL_REL = 1e-3
"""float32 PPL served by the transformers backend equals plain transformers to this, relative."""


def batch_invariance_atol(reference: Any) -> float:
    """One absolute tolerance for a whole array of scores compared across forward passes:
    ``BATCH_INVARIANCE_REL`` of its largest magnitude, at least ``BATCH_INVARIANCE_ABS``.
    For checks written as ``np.max(np.abs(got - want)) <= ...``."""
    largest = float(np.max(np.abs(np.asarray(reference, dtype=np.float64)), initial=0.0))
    return max(BATCH_INVARIANCE_REL * largest, BATCH_INVARIANCE_ABS)


def assert_top_ids_agree(got_ids: Any, want_ids: Any, want_logprobs: Any, atol: float) -> None:
    """Top-k lists ([positions, k], best first) from two forward passes: the same ids,
    except two neighbours within ``atol`` of each other in ``want_logprobs`` may swap (a
    near-tie the contract's rounding may reorder on another CPU: matmul reductions round
    with the batch shape), and the last may be replaced by the next best (whose own
    logprob the caller compares with ``atol`` as well)."""
    got, want = np.asarray(got_ids), np.asarray(want_ids)
    lps = np.asarray(want_logprobs, dtype=np.float64)
    assert got.shape == want.shape == lps.shape and got.ndim == 2, (got.shape, lps.shape)
    last = got.shape[1] - 1
    for row, slot in zip(*np.nonzero(got != want), strict=True):
        neighbours = [s for s in (slot - 1, slot + 1) if 0 <= s <= last]
        tied = any(abs(lps[row, s] - lps[row, slot]) <= atol for s in neighbours)
        assert tied or slot == last, (
            f"position {row}: {got[row].tolist()} against {want[row].tolist()}, not a near-tie"
        )


def assert_ranks_agree(got_ranks: Any, want_ranks: Any) -> None:
    """Ranks of the same tokens from two forward passes: equal, or one apart where the
    target and a near-tied token swap places under the contract's rounding."""
    got, want = np.asarray(got_ranks), np.asarray(want_ranks)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.all(np.abs(got - want) <= 1), (got, want)
