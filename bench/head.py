"""The LM head alone, in-process: whole rows of logits against vocabulary slices.

Times the two ways ``scoring`` turns final hidden states into target logprobs, on the
embedded model's real head weight, for several numbers of scored positions:

- ``rows``: 256 positions at a time through the whole vocabulary, float32 log-softmax,
  gather (the path ranks, top-k and distribution statistics still take);
- ``sliced``: all positions (up to 2048) through 2048 vocabulary entries at a time, each
  slice reduced to its max and sum of exp while in cache (``scoring.projection``).

Prints ms per call, the head's TFLOP/s (2 x positions x hidden x vocab per call) and the
largest difference between the two (nats). With ``--forward N``, also whole forwards of N
short texts (stdlib docstrings, 32 per forward) through two float32 transformers backends,
one with each head, taking turns so that a drift of the machine's speed hits both alike.
A benchmark, not a test.

    .venv/bin/python bench/head.py [--positions 64,256,1024,2048] [--repeat 5]
        [--forward 96 --rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docstrings import stdlib_docstrings
from peers import model_dir

from service.backends.base import ForwardItem
from service.backends.hf import HFBackend
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


def forward_turns(texts: int, rounds: int) -> str:
    """Median forward tok/s (real tokens) of whole rows against slices, in turns."""
    path = model_dir()
    backends = {
        "whole rows": HFBackend(path, dtype="float32", device="cpu", vocab_slice=None),
        "sliced": HFBackend(path, dtype="float32", device="cpu"),
    }
    tokenizer = backends["sliced"].tokenizer
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in stdlib_docstrings(60, 300, texts)]
    items = [ForwardItem(tuple(i), 1) for i in ids if len(i) > 1]
    batches = [items[k : k + 32] for k in range(0, len(items), 32)]
    tokens = sum(len(item.input_ids) for item in items)
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for backend in backends.values():
        backend.forward(batches[0])  # warm-up
    for _ in range(rounds):
        for name, backend in backends.items():
            started = time.perf_counter()
            for batch in batches:
                backend.forward(batch)
            rates[name].append(tokens / (time.perf_counter() - started))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    lines = [f"forward, {len(items)} texts ({tokens} tokens), 32 per forward, {rounds} rounds:"]
    lines += [f"  {name:<10} {m:6.0f} tok/s (median)" for name, m in medians.items()]
    lines.append(f"  sliced / whole rows: {medians['sliced'] / medians['whole rows']:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", default="64,256,1024,2048")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--forward", type=int, default=0, help="texts for whole forwards")
    parser.add_argument("--rounds", type=int, default=4)
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
    if args.forward:
        print(forward_turns(args.forward, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
