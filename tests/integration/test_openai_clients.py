"""Real OpenAI-dialect clients against the real server: the ``openai`` package, and
lm-evaluation-harness ``local-completions`` compared with its own in-process ``hf`` model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from corpus import ENGLISH, OTHER
from server_process import RunningServer
from tolerances import BATCH_INVARIANCE_ABS, BATCH_INVARIANCE_REL, TRANSFORMERS_PPL_REL

pytestmark = pytest.mark.integration

HARNESS = """
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager

model, model_args, include = sys.argv[1], sys.argv[2], sys.argv[3]
results = lm_eval.simple_evaluate(
    model=model, model_args=model_args, tasks=["lmscore_rolling"],
    task_manager=TaskManager(include_path=include), batch_size=1,
)
print("RESULT " + json.dumps(results["results"]["lmscore_rolling"]))
"""

TASK = """task: lmscore_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
should_decontaminate: false
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def test_openai_client_echo_logprobs_equal_score_text(
    server: RunningServer, http: httpx.Client
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    text = ENGLISH[0]
    completion = client.completions.create(
        model="default", prompt=text, echo=True, logprobs=2, max_tokens=0
    )
    choice = completion.choices[0]
    assert choice.text == text
    assert choice.logprobs is not None
    assert "".join(choice.logprobs.tokens) == text
    scored = http.post("/v1/score/text", json={"texts": [text], "return_tokens": True}).json()
    expected = [t["logprob"] for t in scored["results"][0]["tokens"]]
    assert choice.logprobs.token_logprobs[0] is None
    # Two requests, two forward passes: the contract's batch tolerance.
    for got, want in zip(choice.logprobs.token_logprobs[1:], expected[1:], strict=True):
        assert math.isclose(got, want, rel_tol=BATCH_INVARIANCE_REL, abs_tol=BATCH_INVARIANCE_ABS)
    greedy = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=1, temperature=0, logprobs=1
    )
    generated = greedy.choices[0].logprobs
    assert generated is not None and len(generated.tokens) == 1
    assert generated.token_logprobs[0] == max(generated.top_logprobs[0].values())
    assert greedy.usage is not None and greedy.usage.completion_tokens == 1
    assert client.models.retrieve("default").id == "default"
    # vLLM's prompt_logprobs, read as the openai client hands over extra fields.
    extended = client.completions.create(
        model="default", prompt=text, max_tokens=0, extra_body={"prompt_logprobs": 1}
    )
    positions = (extended.choices[0].model_extra or {})["prompt_logprobs"]
    assert positions[0] is None and len(positions) == len(expected)
    for position, want in zip(positions[1:], expected[1:], strict=True):
        mine = next(iter(position.values()))["logprob"]
        assert math.isclose(mine, want, rel_tol=BATCH_INVARIANCE_REL, abs_tol=BATCH_INVARIANCE_ABS)


def test_greedy_tokens_inside_a_character_are_keyed_by_their_piece(http: httpx.Client) -> None:
    """A token holding part of a character decodes alone to U+FFFD, but its entry in
    ``top_logprobs`` is keyed by its piece, as in ``tokens``: a harness that picks the top
    key and compares it with the token (older lm-eval's is_greedy) sees it as greedy."""
    text = "\U0001f600\U0001f600\U0001f44d\U0001f3fd x"  # emoji and a skin tone: byte tokens
    body = {"prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0}
    lp = http.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    tokens = http.post("/v1/score/text", json={"texts": [text], "return_tokens": True}).json()
    ids = [t["id"] for t in tokens["results"][0]["tokens"]]
    split = 0
    for j in range(1, len(ids)):
        piece, logprob, top = lp["tokens"][j], lp["token_logprobs"][j], lp["top_logprobs"][j]
        assert top[piece] == logprob
        alone = http.post("/detokenize", json={"tokens": [ids[j]]}).json()["prompt"]
        if logprob == max(top.values()) and alone != piece:
            split += 1
            assert alone not in top or alone == piece
            assert max(top, key=top.__getitem__) == piece
    assert split > 0, "no greedy token split a character: the check did not run"


def test_a_generated_end_of_turn_adds_no_text(http: httpx.Client) -> None:
    """A generated special token (here the chat template's end of turn, which is also EOS)
    is skipped in the text, as vLLM and OpenAI do, and ends with finish_reason "stop"; its
    logprob is still reported, under its own text as vLLM shows it (a key "" would merge
    special tokens). With vLLM's ignore_eos it does not end with "stop"."""
    prompt = (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?"
    )
    body = {"prompt": prompt, "max_tokens": 1, "logprobs": 1, "echo": True}
    choice = http.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == prompt
    lp = choice["logprobs"]
    assert lp["tokens"][-1] == "<|im_end|>"
    assert lp["top_logprobs"][-1] == {"<|im_end|>": lp["token_logprobs"][-1]}
    ignored = http.post("/v1/completions", json={**body, "ignore_eos": True}).json()
    assert ignored["choices"][0]["finish_reason"] == "length"
    assert ignored["choices"][0]["text"] == prompt


def test_openai_client_streams_the_same_choices(server: RunningServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    prompts = [ENGLISH[0][:80], "The capital of France is"]
    plain = client.completions.create(model="default", prompt=prompts, max_tokens=1, logprobs=1)
    stream = client.completions.create(
        model="default",
        prompt=prompts,
        max_tokens=1,
        logprobs=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = {c.choices[0].index: c.choices[0].text for c in chunks if c.choices}
    assert texts == {c.index: c.text for c in plain.choices}
    streamed = {c.choices[0].index: c.choices[0].logprobs for c in chunks if c.choices}
    for choice in plain.choices:  # the generated token's logprobs, the same both ways
        got, want = streamed[choice.index], choice.logprobs
        assert got is not None and want is not None and got.tokens == want.tokens
        assert got.token_logprobs == pytest.approx(
            want.token_logprobs, rel=BATCH_INVARIANCE_REL, abs=BATCH_INVARIANCE_ABS
        )
    assert chunks[-1].usage is not None and plain.usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == 2


def test_openai_client_chat_completions_score_the_conversation(
    server: RunningServer, http: httpx.Client
) -> None:
    """``chat.completions`` with vLLM's prompt_logprobs: the conversation the template
    renders, scored token by token as /v1/score/chat scores it; the generated token's
    logprobs in OpenAI's chat shape, and the same through a stream."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    messages: list[Any] = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ]
    scored = http.post(
        "/v1/score/chat", json={"conversations": [messages], "return_tokens": True}
    ).json()
    expected = [t["logprob"] for t in scored["results"][0]["tokens"]]
    completion = client.chat.completions.create(
        model="default",
        messages=messages,
        max_tokens=1,
        logprobs=True,
        top_logprobs=2,
        extra_body={"prompt_logprobs": 0, "add_generation_prompt": False},
    )
    choice = completion.choices[0]
    positions = (choice.model_extra or {})["prompt_logprobs"]
    assert positions[0] is None and len(positions) == len(expected)
    for position, want in zip(positions[1:], expected[1:], strict=True):
        mine = next(iter(position.values()))["logprob"]
        assert math.isclose(mine, want, rel_tol=BATCH_INVARIANCE_REL, abs_tol=BATCH_INVARIANCE_ABS)
    assert choice.logprobs is not None and choice.logprobs.content is not None
    (token,) = choice.logprobs.content
    assert (
        token.logprob == token.top_logprobs[0].logprob == max(t.logprob for t in token.top_logprobs)
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 1
    stream = client.chat.completions.create(
        model="default", messages=messages[:1], max_tokens=1, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    plain = client.chat.completions.create(model="default", messages=messages[:1], max_tokens=1)
    assert streamed == plain.choices[0].message.content


def run_harness(model: str, model_args: str, include: Path) -> dict[str, Any]:
    script = include / "harness.py"
    script.write_text(HARNESS)
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    out = subprocess.run(
        [sys.executable, str(script), model, model_args, str(include)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


def test_lm_eval_rolling_perplexity_matches_its_hf_model(
    server: RunningServer, reference: Any, tmp_path: Path
) -> None:
    """Rolling loglikelihood through local-completions equals lm-eval's own hf model on the
    same weights; max_length 128 makes the longer document span several windows."""
    docs = [*ENGLISH, " ".join(ENGLISH), OTHER[1]]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "task.yaml").write_text(TASK.format(data=data))
    weights = reference[1].name_or_path
    served = run_harness(
        "local-completions",
        f"base_url={server.url}/v1/completions,model=default,tokenizer_backend=remote,max_length=128",
        tmp_path,
    )
    local = run_harness(
        "hf", f"pretrained={weights},dtype=float32,device=cpu,max_length=128", tmp_path
    )
    # lm-eval's hf model is plain float32 transformers: the contract's PPL tolerance.
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert math.isclose(served[metric], local[metric], rel_tol=TRANSFORMERS_PPL_REL), metric


def test_lm_eval_loglikelihood_equals_continuations(server: RunningServer) -> None:
    """lm-eval's loglikelihood requests through local-completions (its own token boundary,
    echo logprobs) give the numbers /v1/score/continuations gives, greedy flags included."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(
        base_url=f"{server.url}/v1/completions",
        model="default",
        tokenizer_backend="remote",
        max_length=512,
    )
    context = "The capital of France is"
    candidates = [" Paris.", " a small fish", "\nBerlin", " Париж 😀"]
    pairs = [(context, c) for c in candidates] + [(context + " ", "Paris."), ("", "Hello world")]
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(pairs)
    ]
    expected = lm.loglikelihood(requests)
    for (ctx, continuation), (logprob, greedy) in zip(pairs, expected, strict=True):
        body = {"context": ctx, "continuations": [continuation]}
        result = httpx.post(f"{server.url}/v1/score/continuations", json=body).json()["results"][0]
        # Two requests, two forward passes: the contract's batch tolerance.
        assert math.isclose(result["sum_logprob"], logprob, rel_tol=BATCH_INVARIANCE_REL), pairs
        assert result["is_greedy"] == greedy
    shared = httpx.post(
        f"{server.url}/v1/score/continuations",
        json={"context": context, "continuations": candidates},
    ).json()["results"]
    for result, (logprob, _) in zip(shared, expected, strict=False):
        assert math.isclose(result["sum_logprob"], logprob, rel_tol=BATCH_INVARIANCE_REL)
