"""The LM head alone, in-process: whole rows of logits against vocabulary slices.

Times the two ways ``scoring`` turns final hidden states into target logprobs, on the
embedded model's real head weight, for several numbers of scored positions:

- ``rows``: 256 positions at a time through the whole vocabulary, float32 log-softmax,
  gather (the path ranks, top-k and distribution statistics still take);
- ``sliced``: all positions (up to 2048) through 2048 vocabulary entries at a time, each
  slice reduced to its max and sum of exp while in cache (``scoring.projection``).

Prints ms per call, the head's TFLOP/s (2 x positions x hidden x vocab per call) and the
largest difference between the two (nats). A benchmark, not a test.

    .venv/bin/python bench/head.py [--positions 64,256,1024,2048] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import model_dir

from service.scoring.logprobs import score_hidden_states
from service.scoring.projection import VocabProjection, sliced_target_logprobs


def best_ms(call: Callable[[], torch.Tensor], repeat: int) -> float:
    """Fastest of ``repeat`` timed calls after one warm-up, in ms (the least disturbed)."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def compare(projection: VocabProjection, n: int, repeat: int) -> str:
    """One table row: both ways over ``n`` random hidden states and targets."""
    vocab, hidden_size = projection.weight.shape
    gen = torch.Generator().manual_seed(n)
    hidden = torch.randn(n, hidden_size, generator=gen)
    targets = torch.randint(0, vocab, (n,), generator=gen)

    def whole_rows() -> torch.Tensor:  # a plain callable, so not sliced
        return score_hidden_states(hidden, targets, projection.__call__, 0).logprobs

    def sliced() -> torch.Tensor:
        return sliced_target_logprobs(hidden, targets, projection)

    rows_ms, sliced_ms = best_ms(whole_rows, repeat), best_ms(sliced, repeat)
    gflop = 2 * n * hidden_size * vocab / 1e9
    diff = float((whole_rows() - sliced()).abs().max())
    return (
        f"{n:>9} {rows_ms:>9.1f} {gflop / rows_ms:>8.3f} {sliced_ms:>10.1f} "
        f"{gflop / sliced_ms:>8.3f} {rows_ms / sliced_ms:>8.2f}x {diff:>9.1e}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", default="64,256,1024,2048")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32)
    projection = VocabProjection(model.get_output_embeddings().weight.detach())
    vocab, hidden_size = projection.weight.shape
    print(f"head {vocab} x {hidden_size}, float32, {torch.get_num_threads()} threads")
    print(
        f"{'positions':>9} {'rows ms':>9} {'TFLOP/s':>8} {'sliced ms':>10} {'TFLOP/s':>8} "
        f"{'speed-up':>9} {'max diff':>9}"
    )
    with torch.inference_mode():
        for n in (int(p) for p in args.positions.split(",")):
            print(compare(projection, n, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
