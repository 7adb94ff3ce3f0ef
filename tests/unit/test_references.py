"""Requests naming a reference profile get percentile and is_outlier; profiles made with
another model, revision or dtype are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import pytest
from tiny_engines import asgi_client

from service.api.grpc_server import GrpcDoor
from service.backends.base import BackendInfo
from service.engine import Engine
from service.references import check_profile, with_reference
from service.schemas import TextScoreRequest
from service.scoring.reference import ProfileError, ReferenceProfile, load_profile

ASYNC = pytest.mark.asyncio(loop_scope="session")

TEXTS = ["the cat sat on the mat", "zq xv jj kk qq", "hello there"]


def profile(
    model: str = "default",
    revision: str = "sha256:test",
    metric: str = "bits_per_char",
    dtype: str | None = None,
) -> ReferenceProfile:
    return ReferenceProfile(
        name="prose",
        model=model,
        revision=revision,
        metric=metric,
        points=(0.0, 0.5, 1.0),
        values=(0.0, 4.0, 8.0),
        threshold=6.0,
        count=3,
        dtype=dtype,
    )


@ASYNC
async def test_results_carry_percentile_and_outlier(
    engine_factory: Callable[..., Engine],
) -> None:
    engine = engine_factory()
    engine.references["prose"] = profile()
    plain = (await engine.score_text(TextScoreRequest(texts=TEXTS))).response
    with_ref = (await engine.score_text(TextScoreRequest(texts=TEXTS, reference="prose"))).response
    for a, b in zip(plain.results, with_ref.results, strict=True):
        assert a.percentile is None and a.is_outlier is None
        assert b.bits_per_char is not None
        assert b.percentile == pytest.approx(profile().percentile(b.bits_per_char))
        assert b.is_outlier == (b.bits_per_char > 6.0)
        assert 0.0 <= b.percentile <= 100.0


@ASYNC
async def test_entropy_profile_computes_entropy(engine_factory: Callable[..., Engine]) -> None:
    """A profile on entropy per character gets it computed without the request asking."""
    engine = engine_factory()
    entropy_profile = profile(metric="entropy_bits_per_char")
    engine.references["prose"] = entropy_profile
    with_ref = (await engine.score_text(TextScoreRequest(texts=TEXTS, reference="prose"))).response
    asked = await engine.score_text(TextScoreRequest(texts=TEXTS, return_entropy=True))
    for b, want in zip(with_ref.results, asked.response.results, strict=True):
        assert b.entropy_bits_per_char is not None and want.entropy_bits_per_char is not None
        assert b.entropy_bits_per_char == pytest.approx(want.entropy_bits_per_char, rel=1e-4)
        assert b.percentile == pytest.approx(entropy_profile.percentile(b.entropy_bits_per_char))


@ASYNC
async def test_rest_reference_errors_and_fields(
    engine_factory: Callable[..., Engine], client_factory: Callable[..., httpx.AsyncClient]
) -> None:
    http = client_factory()
    engine: Any = http._transport.app.state.engine  # type: ignore[attr-defined]
    engine.references["prose"] = profile()
    ok = await http.post("/v1/score/text", json={"texts": TEXTS, "reference": "prose"})
    assert ok.status_code == 200
    assert all({"percentile", "is_outlier"} <= set(r) for r in ok.json()["results"])
    plain = await http.post("/v1/score/text", json={"texts": TEXTS})
    assert all("percentile" not in r for r in plain.json()["results"])
    # A text of one token scores nothing: asked for, its percentile is null, not absent.
    lone = await http.post("/v1/score/text", json={"texts": ["a", *TEXTS], "reference": "prose"})
    first = lone.json()["results"][0]
    assert first["num_scored_tokens"] == 0
    assert first["percentile"] is None and first["is_outlier"] is None
    unknown = await http.post("/v1/score/text", json={"texts": TEXTS, "reference": "nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "reference"
    engine.references["other"] = profile(model="another")
    wrong = await http.post("/v1/score/text", json={"texts": TEXTS, "reference": "other"})
    assert wrong.status_code == 422 and "another" in wrong.json()["error"]["message"]


def served(full_distribution: bool = True) -> Any:
    """A served model as check_profile reads it: its revision and backend info."""
    info = BackendInfo("vllm", "float32", "cpu", 64, full_distribution=full_distribution)
    return SimpleNamespace(revision="sha256:test", backend=SimpleNamespace(info=info))


def test_profiles_from_another_model_or_revision_are_refused() -> None:
    check_profile(profile(), {"default": served()})
    with pytest.raises(ProfileError, match="not served"):
        check_profile(profile(model="other"), {"default": served()})
    with pytest.raises(ProfileError, match="calibrate it again"):
        check_profile(profile(revision="sha256:old"), {"default": served()})


def test_profiles_made_in_another_dtype_are_refused(tmp_path: Path) -> None:
    """bf16 moves bits per char by up to several percent against float32: a profile made
    on a float32 server would put a bf16 server's percentiles off. One without a dtype
    (an older client's) is taken as it is."""
    check_profile(profile(dtype="float32"), {"default": served()})
    check_profile(profile(dtype=None), {"default": served()})
    with pytest.raises(ProfileError, match=r"in bfloat16, but it is served in float32.*dtype="):
        check_profile(profile(dtype="bfloat16"), {"default": served()})
    fields = {"model": "default", "revision": "sha256:test", "metric": "bits_per_char",
              "quantiles": [[0, 1.0], [1, 2.0]]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps({**fields, "dtype": "bfloat16"}))
    (tmp_path / "b.json").write_text(json.dumps(fields))
    assert load_profile("a", tmp_path / "a.json").dtype == "bfloat16"
    assert load_profile("b", tmp_path / "b.json").dtype is None


@pytest.mark.parametrize("metric", ["entropy_bits_per_char", "mean_entropy"])
def test_entropy_profiles_need_a_backend_that_sees_the_distribution(metric: str) -> None:
    """A top-k backend (vLLM) cannot compute entropy: refused at start-up, not on every
    request that names the profile."""
    check_profile(profile(metric=metric), {"default": served()})
    with pytest.raises(ProfileError, match="no full distribution"):
        check_profile(profile(metric=metric), {"default": served(full_distribution=False)})
    check_profile(profile(), {"default": served(full_distribution=False)})


def test_no_profile_leaves_results_alone() -> None:
    sentinel: Any = object()
    assert with_reference(sentinel, None) is sentinel


def test_grpc_carries_reference_and_results() -> None:
    from service.api import grpc_convert as convert
    from service.api.pb.lmscore.v1 import scoring_pb2 as pb
    from service.schemas import Aggregate, ScoreResponse, TextResult, Usage

    req = convert.text_request(pb.ScoreTextRequest(texts=["a b"], reference="prose"))
    assert req.reference == "prose"
    assert convert.text_request(pb.ScoreTextRequest(texts=["a b"])).reference is None
    chat = convert.chat_request(
        pb.ScoreChatRequest(
            conversations=[
                pb.Conversation(messages=[pb.ChatMessage(role="assistant", content="x")])
            ],
            reference="prose",
        )
    )
    assert chat.reference == "prose"
    result = TextResult(
        num_tokens=2,
        num_scored_tokens=1,
        sum_logprob=-1.0,
        mean_nll=1.0,
        ppl=2.7,
        bits_per_byte=1.0,
        bits_per_char=1.0,
        percentile=42.0,
        is_outlier=False,
    )
    response = ScoreResponse(
        model="default",
        model_revision="sha256:x",
        results=[result],
        aggregate=Aggregate(num_scored_tokens=1, sum_logprob=-1.0, mean_nll=1.0, ppl=2.7),
        usage=Usage(prompt_tokens=2),
    )
    message = convert.to_message(response, pb.ScoreTextResponse)
    assert message.results[0].percentile == 42.0
    assert message.results[0].HasField("is_outlier") and not message.results[0].is_outlier


@ASYNC
async def test_references_are_listed_over_rest(engine_factory: Callable[..., Engine]) -> None:
    engine = engine_factory()
    engine.references["prose"] = profile()
    async with asgi_client(engine) as client:
        listed = (await client.get("/v1/references")).json()
    assert listed == {
        "object": "list",
        "data": [
            {
                "name": "prose",
                "model": "default",
                "revision": "sha256:test",
                "metric": "bits_per_char",
                "threshold": 6.0,
                "count": 3,
            }
        ],
    }


@ASYNC
async def test_references_are_listed_over_grpc_as_over_rest(
    engine_factory: Callable[..., Engine],
) -> None:
    from google.protobuf.json_format import MessageToDict

    from service.api.pb.lmscore.v1 import scoring_pb2 as pb
    from service.api.pb.lmscore.v1 import scoring_pb2_grpc as pb_grpc

    engine = engine_factory()
    engine.references["prose"] = profile()
    async with asgi_client(engine) as client:
        rest = (await client.get("/v1/references")).json()
    door = GrpcDoor(engine)
    port = door.bind("127.0.0.1", 0)
    await door.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ScorerStub(channel)
            listed = await stub.ListReferences(pb.ListReferencesRequest(), timeout=30)
    finally:
        await door.stop(grace_s=0.0)
    assert MessageToDict(listed, preserving_proto_field_name=True) == rest


@ASYNC
async def test_two_profiles_with_one_name_are_refused(
    engine_factory: Callable[..., Engine], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two --reference flags naming the same profile: refused at start-up, not the last
    one silently winning."""
    import json

    engine = engine_factory()
    path = tmp_path / "prose.json"
    quantiles = [[0.0, 1.0], [0.5, 2.0], [1.0, 3.0]]
    fields = {"model": "default", "revision": "sha256:test", "metric": "bits_per_char"}
    path.write_text(json.dumps({**fields, "quantiles": quantiles}))

    async def already_loaded(specs: Any) -> None:
        return None

    monkeypatch.setattr(engine.registry, "load", already_loaded)
    engine.settings = engine.settings.model_copy(update={"reference": [f"prose={path}"]})
    await engine.load([])
    assert set(engine.references) == {"prose"}
    engine.references.clear()
    twice = [f"prose={path}", f"prose={path}"]
    engine.settings = engine.settings.model_copy(update={"reference": twice})
    with pytest.raises(ProfileError, match="two reference profiles"):
        await engine.load([])
