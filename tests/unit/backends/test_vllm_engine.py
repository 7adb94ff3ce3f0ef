"""The vLLM backend over a stand-in for vLLM's async engine (vLLM itself is in
``.venv-vllm``; ``tests/vllm`` runs it for real): how a window's scores are read from its
output, and that a failing window aborts its siblings in the engine."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoConfig

from service.backends.base import ForwardItem
from service.backends.vllm_engine import VLLMBackend
from service.errors import InvalidRequest, Unavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAIL = 3  # a prompt holding this token id fails in the stand-in engine
HANG = 4  # one holding this id runs until it is aborted
DEAD = 8  # one holding this id finds the engine dead


class VLLMClientError(Exception):
    """Stands in for ``vllm.exceptions.VLLMClientError``."""


class VLLMValidationError(VLLMClientError):
    """Stands in for ``vllm.exceptions.VLLMValidationError``."""


class EngineDeadError(Exception):
    """Stands in for ``vllm.v1.engine.exceptions.EngineDeadError``."""


class Logprob:
    def __init__(self, logprob: float, rank: int) -> None:
        self.logprob, self.rank = logprob, rank


class FakeAsyncLLM:
    """Answers each prompt token p with {p: -p/10 at rank 2, 1: -0.05 at rank 1}; the
    generated token is 1, with its logprob unless ``drop_sampled``. As vLLM 0.32 does, it
    refuses a prompt that leaves no room for the generated tokens in ``max_model_len``."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.model_config = types.SimpleNamespace(dtype="torch.float32")
        self.aborted: list[str] = []
        self.started: list[str] = []
        self.params: list[Any] = []
        self.drop_sampled = False

    @classmethod
    def from_engine_args(cls, args: dict[str, Any]) -> FakeAsyncLLM:
        return cls(args)

    async def generate(
        self, prompt: dict[str, Any], params: Any, request_id: str
    ) -> AsyncIterator[Any]:
        ids = prompt["prompt_token_ids"]
        self.started.append(request_id)
        self.params.append(params)
        await asyncio.sleep(0)
        if len(ids) + params.max_tokens > self.args["max_model_len"]:
            raise VLLMValidationError(f"{len(ids)} tokens plus {params.max_tokens} too long")
        if DEAD in ids:
            raise EngineDeadError("engine core died")
        if FAIL in ids:
            raise RuntimeError("engine error")
        if HANG in ids:
            await asyncio.Event().wait()
        entries = [None] + [{t: Logprob(-t / 10, 2), 1: Logprob(-0.05, 1)} for t in ids[1:]]
        sampled = {} if self.drop_sampled else {1: Logprob(-0.05, 1)}
        yield types.SimpleNamespace(
            prompt_logprobs=entries,
            outputs=[types.SimpleNamespace(token_ids=[1], logprobs=[sampled])],
        )

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        pass


@pytest.fixture
def backend(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> VLLMBackend:
    """The backend built through its constructor, with vLLM's modules stood in for."""
    modules = {
        "vllm": {
            "SamplingParams": lambda **kwargs: types.SimpleNamespace(**kwargs),
        },
        "vllm.inputs": {"TokensPrompt": lambda **kwargs: kwargs},
        "vllm.exceptions": {"VLLMClientError": VLLMClientError},
        "vllm.v1.engine.exceptions": {"EngineDeadError": EngineDeadError},
        "vllm.engine": {},
        "vllm.engine.arg_utils": {"AsyncEngineArgs": lambda **kwargs: kwargs},
        "vllm.v1": {},
        "vllm.v1.engine": {},
        "vllm.v1.engine.async_llm": {"AsyncLLM": FakeAsyncLLM},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    return VLLMBackend(tiny_model_dir, name="fake-vllm", device="cpu")


@pytest.fixture
def capped(backend: VLLMBackend, tiny_model_dir: Path) -> VLLMBackend:
    """The same, built with ``--max-context 16`` (below the model's own length)."""
    return VLLMBackend(tiny_model_dir, name="fake-vllm", device="cpu", max_context=16)


async def test_the_model_declares_its_vocabulary(
    backend: VLLMBackend, tiny_model_dir: Path
) -> None:
    # So a token the model has no embedding for is a 422 here too, not vLLM's error (500).
    assert backend.info.vocab_size == AutoConfig.from_pretrained(tiny_model_dir).vocab_size


async def test_scores_come_from_prompt_logprobs(backend: VLLMBackend) -> None:
    [result] = await backend.score([ForwardItem((5, 6, 7), 1, top_k=1, next_token=True)])
    assert result.logprobs.tolist() == pytest.approx([-0.6, -0.7])
    assert result.ranks.tolist() == [2, 2]
    assert result.top_ids.tolist() == [[1], [1]]
    assert result.next_top_ids is not None and result.next_top_ids.tolist() == [1]


async def test_a_failing_window_aborts_its_siblings_in_the_engine(backend: VLLMBackend) -> None:
    # asyncio.gather left the sibling running in vLLM after the call had failed; the
    # pass-through had already given its slot back.
    engine: FakeAsyncLLM = backend.engine
    with pytest.raises(RuntimeError, match="engine error"):
        await asyncio.wait_for(
            backend.score([ForwardItem((5, HANG), 1), ForwardItem((5, FAIL), 1)]), 10
        )
    assert len(engine.started) == 2
    assert engine.aborted == [engine.started[0]]  # the hanging one, before score returned


async def test_a_generated_token_without_its_logprob_is_an_error(backend: VLLMBackend) -> None:
    # It was reported as logprob 0 (probability 1).
    engine: FakeAsyncLLM = backend.engine
    engine.drop_sampled = True
    with pytest.raises(RuntimeError, match="no logprob for the generated token"):
        await backend.score([ForwardItem((5, 6), 1, next_token=True)])


async def test_a_window_of_the_declared_context_is_scored(
    backend: VLLMBackend, capped: VLLMBackend, tiny_model_dir: Path
) -> None:
    """vLLM refuses a prompt of max_model_len tokens (it needs room for the generated
    one): every full sliding window and every truncated text failed with a 500. Windows
    of the declared context now fit, at the model's own length and below it."""
    native = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    assert backend.info.max_context == native - 1
    assert backend.engine.args["max_model_len"] == native
    assert capped.info.max_context == 16 and capped.engine.args["max_model_len"] == 17
    for served in (backend, capped):
        n = served.info.max_context
        [result] = await served.score([ForwardItem((5,) * n, 1, next_token=True)])
        assert len(result.logprobs) == n - 1


async def test_vllm_errors_become_ours(backend: VLLMBackend) -> None:
    """vLLM's refusal of a window is the input's fault (422), its dead engine a 503;
    any other failure stays an internal error."""
    too_long = (5,) * (backend.info.max_context + 1)
    with pytest.raises(InvalidRequest, match="vLLM refused the window"):
        await backend.score([ForwardItem(too_long, 1)])
    with pytest.raises(Unavailable, match="engine has stopped"):
        await backend.score([ForwardItem((5, DEAD), 1)])
    with pytest.raises(RuntimeError, match="engine error"):
        await backend.score([ForwardItem((5, FAIL), 1)])


async def test_what_vllm_is_asked_for(backend: VLLMBackend) -> None:
    """Each window: its prompt logprobs with top_k alternatives (0 still gives the token's
    own), one greedy token (its logprobs only when the next token is asked for), no text;
    the engine: no prefix caching (wrong prompt logprobs in some versions), 20 logprobs."""
    engine: FakeAsyncLLM = backend.engine
    await backend.score(
        [ForwardItem((5, 6, 7), 1, top_k=3), ForwardItem((5, 6), 1, top_k=0, next_token=True)]
    )
    first, second = engine.params[-2:]
    assert (first.prompt_logprobs, first.logprobs) == (3, None)
    assert (second.prompt_logprobs, second.logprobs) == (0, 0)
    for params in (first, second):
        assert (params.max_tokens, params.temperature, params.detokenize) == (1, 0.0, False)
    assert engine.args["enable_prefix_caching"] is False
    assert engine.args["max_logprobs"] == 20
