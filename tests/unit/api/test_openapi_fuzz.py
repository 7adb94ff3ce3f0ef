"""Property-based fuzzing of the REST door against its own OpenAPI document.

schemathesis draws valid and invalid requests for every operation of ``/openapi.json`` and
sends them in process (ASGI) to an app over the tiny random model. Hand-made bodies add
what a JSON Schema generator never sends: NaN and Infinity, lone surrogates, integers past
64 bits or past Python's 4300-digit limit, deep nesting, and values of the wrong type at
any depth. Every answer must be one the document declares: never a 5xx, a declared status
code and content type, and a body that matches the declared schema (for errors,
``ErrorResponse``). Examples are derandomized, so CI runs are reproducible.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from tiny_engines import make_engine

from service.api.rest import create_app
from service.backends import dynamic_batcher
from service.backends.hf import HFBackend

# Every operation of the document; test_every_operation_is_fuzzed keeps this list whole.
OPERATIONS = (
    "POST /v1/score/text",
    "POST /v1/score/chat",
    "POST /v1/score/continuations",
    "POST /v1/score/compare",
    "POST /v1/completions",
    "POST /v1/chat/completions",
    "POST /tokenize",
    "POST /detokenize",
    "GET /tokenizer_info",
    "GET /v1/models",
    "GET /v1/models/{model_id}",
    "GET /v1/references",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = fuzz_settings(max_examples=50)

JSON = "application/json"
Place = tuple[str | int, ...]
# Valid requests that use every field, so replacing the value at any of their places
# perturbs a request that would otherwise succeed (test_valid_bodies_are_accepted).
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "text": (
        "POST /v1/score/text",
        {
            "model": "default",
            "texts": ["hello world", "Grüße aus München 😀"],
            "return_tokens": True,
            "top_k": 2,
            "overflow": "sliding_window",
            "stride": 16,
            "return_entropy": True,
            "min_k": True,
            "min_k_percent": 50.0,
            "prepend_bos": True,
            "reference": None,
            "words": True,
        },
    ),
    "chat": (
        "POST /v1/score/chat",
        {
            "model": "default",
            "conversations": [
                [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
            ],
            "score_roles": ["assistant"],
            "include_end_of_turn": True,
            "return_tokens": True,
            "top_k": 1,
            "overflow": "truncate",
            "stride": None,
            "return_entropy": False,
            "min_k": False,
            "min_k_percent": 20.0,
            "reference": None,
        },
    ),
    "continuations": (
        "POST /v1/score/continuations",
        {
            "model": "default",
            "context": "the quick",
            "continuations": [" fox"],
            "return_tokens": True,
        },
    ),
    "compare": (
        "POST /v1/score/compare",
        {
            "models": ["default", "twin"],
            "texts": ["hello"],
            "token_level": True,
            "return_tokens": True,
        },
    ),
    "completions": (
        "POST /v1/completions",
        {
            "model": "default",
            "prompt": ["hello world", [1, 2, 3]],
            "echo": True,
            "logprobs": 2,
            "max_tokens": 1,
            "temperature": 0,
            "top_p": 1,
            "n": 1,
            "best_of": 1,
            "stream": False,
            "seed": 1,
            "stop": ["\n"],
            "user": "fuzz",
        },
    ),
    "chat completions": (
        "POST /v1/chat/completions",
        {
            "model": "default",
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
            ],
            "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": 2,
            "temperature": 0,
            "stream": False,
            "stop": ["\n"],
            "echo": True,
            "prompt_logprobs": 1,
            "add_generation_prompt": False,
            "continue_final_message": True,
            "chat_template_kwargs": {"enable_thinking": False},
            "return_token_ids": True,
        },
    ),
    "tokenize prompt": (
        "POST /tokenize",
        {"model": "default", "prompt": "hello", "add_special_tokens": True},
    ),
    "tokenize messages": (
        "POST /tokenize",
        {
            "messages": [{"role": "user", "content": "hello"}],
            "add_generation_prompt": True,
            "return_token_strs": True,
        },
    ),
    "detokenize": ("POST /detokenize", {"model": "default", "tokens": [1, 2, 3]}),
}

# Stand-ins replaced by raw JSON text after encoding (json.dumps cannot write either).
GIANT = "\x00giant integer\x00"  # more digits than Python converts (ValueError)
DEEP = "\x00deep nesting\x00"  # deeper than json.loads recurses (RecursionError)
RAW = {json.dumps(GIANT): "9" * 5000, json.dumps(DEEP): "[" * 5000 + "]" * 5000}

# Put at every place of every valid body (test_special_values_everywhere...).
SPECIAL: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    2**63,
    -(2**63) - 1,
    10**100,
    GIANT,
    -1,
    0,
    1.5,
    True,
    None,
    "",
    "\ud800",
    "a\udfffb",
    "\x00",
    "default",
    [],
    {},
    [None],
    {"": None},
    DEEP,
]
odd_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
odd_values = st.recursive(
    st.sampled_from(SPECIAL) | st.integers() | st.floats() | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)


def places(value: Any, prefix: Place = ()) -> Iterator[Place]:
    """Every place in a JSON value: the value itself, and each member and item at any depth."""
    yield prefix
    if isinstance(value, dict):
        for key, member in value.items():
            yield from places(member, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from places(item, (*prefix, index))


def replaced(body: dict[str, Any], place: Place, value: Any) -> Any:
    """A copy of ``body`` with ``value`` at ``place``."""
    if not place:
        return value
    copied = copy.deepcopy(body)
    parent: Any = copied
    for step in place[:-1]:
        parent = parent[step]
    parent[place[-1]] = value
    return copied


def encoded(body: Any) -> bytes:
    """``body`` as JSON text that Python's parser reads back (NaN, escaped surrogates)."""
    text = json.dumps(body, allow_nan=True)
    for stand_in, raw in RAW.items():
        text = text.replace(stand_in, raw)
    return text.encode("ascii")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(tiny_model_dir: Path) -> AsyncIterator[OpenApiSchema]:
    """The app's own OpenAPI document, bound to that app (requests go in process). One
    engine takes all the fuzzing of this module, as a long-running server would; it also
    serves ``twin``, the same model again, so comparisons go all the way."""
    engine = make_engine(tiny_model_dir)
    backend = HFBackend(tiny_model_dir, dtype="float32", device="cpu")
    engine.registry.add("twin", "sha256:twin", dynamic_batcher(backend, "twin", engine.settings))
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(engine))
    await engine.close()


def test_every_operation_is_fuzzed(api: OpenApiSchema) -> None:
    """OPERATIONS is the document's whole list: a new route cannot escape the fuzzing."""
    document = api.raw_schema["paths"]
    labels = {f"{method.upper()} {path}" for path, item in document.items() for method in item}
    assert labels == set(OPERATIONS)
    assert {label for label, _ in VALID.values()} == {op for op in OPERATIONS if "POST" in op}


@pytest.mark.parametrize("label", OPERATIONS)
def test_generated_requests_get_documented_answers(api: OpenApiSchema, label: str) -> None:
    """Requests drawn from the document, valid and invalid, are answered without a 5xx
    and as the document declares (status, content type, headers, body schema)."""
    operation = api.find_operation_by_label(label)
    assert operation is not None
    cases = st.one_of([operation.as_strategy(mode) for mode in GenerationMode])

    @FUZZ
    @given(case=cases)
    def answered_as_documented(case: Case) -> None:
        case.call_and_validate(checks=CHECKS)

    answered_as_documented()


@pytest.mark.parametrize(("label", "body"), VALID.values(), ids=VALID.keys())
def test_valid_bodies_are_accepted(api: OpenApiSchema, label: str, body: dict[str, Any]) -> None:
    """The bodies the odd-value fuzzing perturbs are accepted as they are."""
    operation = api.find_operation_by_label(label)
    assert operation is not None
    response = operation.Case(body=body, media_type=JSON).call()
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("label", "body"), VALID.values(), ids=VALID.keys())
def test_special_values_everywhere_get_documented_answers(
    api: OpenApiSchema, label: str, body: dict[str, Any]
) -> None:
    """Each SPECIAL value (NaN, Infinity, lone surrogates, huge and giant integers, deep
    nesting, empty and wrong-typed values) at each place of a valid body, the whole body
    included, is answered without a 5xx and as the document declares."""
    operation = api.find_operation_by_label(label)
    assert operation is not None
    for place in places(body):
        for value in SPECIAL:
            case = operation.Case(body=encoded(replaced(body, place, value)), media_type=JSON)
            try:
                case.call_and_validate(checks=CHECKS)
            except Exception as exc:
                exc.add_note(f"{label}: {value!r} at {list(place)}")
                raise


@pytest.mark.parametrize(("label", "body"), VALID.values(), ids=VALID.keys())
def test_random_garbage_anywhere_gets_documented_answers(
    api: OpenApiSchema, label: str, body: dict[str, Any]
) -> None:
    """A valid body with the value at a random place replaced by random nested garbage
    (SPECIAL values, any numbers, text with lone surrogates, lists, objects) is answered
    without a 5xx and as the document declares."""
    operation = api.find_operation_by_label(label)
    assert operation is not None

    @FUZZ
    @given(place=st.sampled_from(list(places(body))), value=odd_values)
    def answered_as_documented(place: Place, value: Any) -> None:
        case = operation.Case(body=encoded(replaced(body, place, value)), media_type=JSON)
        case.call_and_validate(checks=CHECKS)

    answered_as_documented()
