"""The Ray adapter's parts that need no cluster: failover between servers, the score
columns, the band, and the atomic shards of the own resume mode."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TypeVar

import pytest

pa = pytest.importorskip("pyarrow", reason="the Ray extra is not installed")

from lmscore_client import Distribution, ScoreOptions, build, pipeline  # noqa: E402
from lmscore_client.errors import (  # noqa: E402
    ConnectionFailedError,
    InvalidRequestError,
    LMScoreError,
    OverloadedError,
    RequestTimeoutError,
)
from lmscore_client.pipeline import Item  # noqa: E402
from lmscore_client.ray import RowFormat, score_schema  # noqa: E402
from lmscore_client.ray.columns import block_items, with_scores  # noqa: E402
from lmscore_client.ray.job import keep_band  # noqa: E402
from lmscore_client.ray.resume import ShardWriter, written_ids  # noqa: E402
from lmscore_client.ray.scorer import RemoteScorer, as_arrow  # noqa: E402
from lmscore_client.ray.senders import FailoverSender, Servers  # noqa: E402
from lmscore_client.results import TextResult  # noqa: E402
from lmscore_client.retry import RetryPolicy  # noqa: E402

T = TypeVar("T")
OK = {
    "model": "m",
    "model_revision": "r",
    "results": [],
    "aggregate": {"num_scored_tokens": 0, "sum_logprob": 0.0},
    "usage": {"prompt_tokens": 0},
}


class FakeEndpoint:
    """Answers with the errors it is given, in turn, then OK; records when it was called."""

    def __init__(self, name: str, errors: list[LMScoreError]) -> None:
        self.name = name
        self.errors = list(errors)
        self.calls: list[float] = []

    async def call(self, api_call: build.ApiCall[T]) -> T:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return api_call.parse(OK)

    async def close(self) -> None:
        return None


def send(endpoints: list[FakeEndpoint], retry: RetryPolicy | None = None) -> FailoverSender:
    sender = FailoverSender(endpoints, retry or RetryPolicy(max_attempts=10))
    asyncio.run(sender.call(build.score_text("x")))
    return sender


def test_a_dead_server_moves_the_request_to_the_next() -> None:
    dead = FakeEndpoint("a", [ConnectionFailedError("refused")])
    alive = FakeEndpoint("b", [])
    sender = FailoverSender([dead, alive], RetryPolicy(max_attempts=10), first=0)
    asyncio.run(sender.call(build.score_text("x")))
    assert len(dead.calls) == 1 and len(alive.calls) == 1 and sender.failovers == 1


def test_429_everywhere_waits_for_retry_after() -> None:
    busy = OverloadedError("busy", status=429, retry_after_s=0.3)
    a = FakeEndpoint("a", [busy])
    b = FakeEndpoint("b", [busy])
    sender = send([a, b])
    first = min(a.calls + b.calls)
    assert max(a.calls + b.calls) - first >= 0.29  # the third try waited for Retry-After
    assert sender.failovers == 2


def test_a_request_error_is_not_retried_elsewhere() -> None:
    bad = FakeEndpoint("a", [InvalidRequestError("texts[0]: bad", status=422)])
    other = FakeEndpoint("b", [])
    sender = FailoverSender([bad, other], RetryPolicy(), first=0)
    with pytest.raises(InvalidRequestError):
        asyncio.run(sender.call(build.score_text("x")))
    assert other.calls == []


def test_gives_up_after_the_attempt_budget() -> None:
    down = [FakeEndpoint(n, [ConnectionFailedError("down")] * 10) for n in "ab"]
    with pytest.raises(ConnectionFailedError):
        send(down, RetryPolicy(max_attempts=3))


@pytest.mark.parametrize("servers", [1, 3])
def test_a_504_is_tried_on_one_other_server_at_most(servers: int) -> None:
    """A request that outlasted a server's deadline would outlast it again: it goes to
    one other server (where there is one), then back to the caller as the rows' error."""
    slow = RequestTimeoutError("deadline", status=504)
    endpoints = [FakeEndpoint(str(n), [slow] * 5) for n in range(servers)]
    sender = FailoverSender(endpoints, RetryPolicy(max_attempts=20, backoff_s=0.01), first=0)
    with pytest.raises(RequestTimeoutError):
        asyncio.run(sender.call(build.score_text("x")))
    assert sum(len(e.calls) for e in endpoints) == min(2, servers)


def test_waits_follow_the_retry_policy_backoff() -> None:
    """Without Retry-After, a server that failed rests for the policy's backoff, doubling
    with each failure of the request (jitter off)."""
    down = FakeEndpoint("a", [ConnectionFailedError("down")] * 3)
    retry = RetryPolicy(max_attempts=10, backoff_s=0.1, jitter=0.0)
    send([down], retry)
    gaps = [later - earlier for earlier, later in zip(down.calls, down.calls[1:], strict=False)]
    assert len(gaps) == 3
    for gap, want in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert want - 0.01 <= gap <= want + 0.5  # a loaded machine wakes late, never early


def test_batches_in_every_ray_format_become_arrow_tables() -> None:
    """``map_batches(RemoteScorer, ...)`` with Ray's default (numpy) or pandas format."""
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    want = pa.table({"id": [1, 2], "text": ["a b", None]})
    as_numpy = {"id": np.array([1, 2]), "text": np.array(["a b", None], dtype=object)}
    for batch in (want, as_numpy, pd.DataFrame({"id": [1, 2], "text": ["a b", None]})):
        got = as_arrow(batch)
        assert got.to_pylist() == want.to_pylist()
        assert [it.kind for it in block_items(got, RowFormat())] == ["text", "reject"]


def _result(ppl: float) -> TextResult:
    return TextResult(
        num_tokens=4,
        num_scored_tokens=3,
        sum_logprob=-3.0,
        mean_nll=1.0,
        ppl=ppl,
        bits_per_byte=0.5,
        bits_per_char=ppl / 10,
    )


def test_score_columns_keep_rows_and_types() -> None:
    rows = RowFormat(chat_field="messages")
    block = pa.table({"id": [1, 2, 3], "text": ["a", None, "c"], "messages": [None, None, None]})
    items = block_items(block, rows)
    assert [it.kind for it in items] == ["text", "reject", "text"]
    items[0].result = _result(5.0)
    items[2].error = {
        "status": 422,
        "type": "invalid_request",
        "message": "long",
        "param": "texts[7]",
    }
    out = with_scores(block, items, ScoreOptions(reference="web"), rows)
    schema = score_schema(ScoreOptions(reference="web"), rows)
    assert out.column_names == ["id", "text", "messages", *schema]
    assert out.column("ppl").to_pylist() == [5.0, None, None]
    errors = out.column("score_error").to_pylist()
    assert errors[0] is None
    assert errors[1]["type"] == "missing_field"
    assert errors[2]["param"] == "text"  # the row's field, not its place in a request


def test_a_binary_text_column_is_a_row_error_not_a_failed_job() -> None:
    """Parquet ``binary`` columns read as bytes, which no request can carry."""
    block = pa.table({"id": [1, 2], "text": pa.array([b"hello", None], pa.binary())})
    items = block_items(block, RowFormat())
    assert [it.kind for it in items] == ["reject", "reject"]
    assert items[0].error is not None and items[0].error["type"] == "invalid_row"
    assert "bytes" in items[0].error["message"] and items[0].error["param"] == "text"


def test_band_keeps_the_inside_and_every_error() -> None:
    table = pa.table(
        {
            "ppl": [5.0, 50.0, None, 10.0],
            "bits_per_char": [0.5, 2.0, None, 1.0],
            "score_error": pa.array(
                [None, None, {"status": 422, "type": "t", "message": "m", "param": None}, None],
                type=score_schema(ScoreOptions(), RowFormat())["score_error"],
            ),
        }
    )
    kept = keep_band(table, {"ppl": (None, 20.0), "bits_per_char": (0.8, None)}, "score_error")
    assert kept.column("ppl").to_pylist() == [None, 10.0]


def test_shards_are_complete_files_and_stale_temporaries_go(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, "jsonl", "id")
    writer(pa.table({"id": [1, 2], "text": ["a", "b"]}))
    writer(pa.table({"id": [3], "text": ["c"]}))
    (tmp_path / ".part-dead.jsonl.tmp").write_text('{"id": 4')  # a killed write
    assert sorted(written_ids(tmp_path, "jsonl", "id").to_pylist()) == [1, 2, 3]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_missing_text_in_a_numpy_batch_is_a_row_error_not_a_failed_job() -> None:
    # Ray's numpy batches hold a text column's nulls as NaN: the block failed (NaN is no
    # JSON; or pyarrow refused a float among strings) where pandas/pyarrow marked the row.
    np = pytest.importorskip("numpy")
    mixed = {"id": np.array([1, 2]), "text": np.array(["a b", np.nan], dtype=object)}
    all_null = {"id": np.array([1, 2]), "text": np.array([np.nan, np.nan], dtype=np.float32)}
    for batch in (mixed, all_null):
        items = block_items(as_arrow(batch), RowFormat())
        assert [it.kind for it in items[1:]] == ["reject"]
        assert items[1].error is not None and items[1].error["type"] == "missing_field"
    numeric = {"id": np.array([1]), "x": np.array([np.nan], dtype=np.float64)}
    assert np.isnan(as_arrow(numeric).column("x").to_pylist()[0])  # a number stays a number


class CountingSender:
    """Answers every scoring request with ``error`` (or scores, once it is None)."""

    def __init__(self, error: LMScoreError | None, fail_texts: set[str] | None = None) -> None:
        self.error = error
        self.fail_texts = fail_texts
        self.calls = 0

    async def call(self, api_call: build.ApiCall[T]) -> T:
        self.calls += 1
        texts = (api_call.body or {})["texts"]
        if self.error is not None and (self.fail_texts is None or self.fail_texts & set(texts)):
            raise self.error
        results = [
            {"num_tokens": 2, "num_scored_tokens": 1, "sum_logprob": -1.0, "mean_nll": 1.0,
             "ppl": 2.7, "bits_per_byte": 1.0, "bits_per_char": 1.0, "truncated": False}
            for _ in texts
        ]  # fmt: skip
        return api_call.parse({**OK, "results": results})


def _score(sender: CountingSender, texts: list[str]) -> list[Item]:
    items = block_items(pa.table({"text": texts}), RowFormat())
    opts = pipeline.Options(score=ScoreOptions(), timeout_is_rows_error=True)
    asyncio.run(pipeline.score_items(sender, items, False, opts, pipeline.RunInfo()))
    return items


def test_a_504_is_the_rows_error_without_halving_the_request() -> None:
    # 32 rows behind a 504 took 63 requests, each waiting out the server's deadline.
    sender = CountingSender(RequestTimeoutError("deadline", status=504))
    items = _score(sender, [f"row {i}" for i in range(32)])
    assert sender.calls == 1
    assert all(it.error is not None and it.error["status"] == 504 for it in items)


def test_a_row_that_cannot_be_sent_as_json_fails_alone() -> None:
    # The client refuses before sending (status 0): that is the rows', not an outage.
    refused = InvalidRequestError("the request cannot be sent as JSON: NaN", status=0)
    sender = CountingSender(refused, fail_texts={"row 5"})
    items = _score(sender, [f"row {i}" for i in range(8)])
    assert [it.error is not None for it in items] == [i == 5 for i in range(8)]
    assert all(it.result is not None for i, it in enumerate(items) if i != 5)


@pytest.mark.parametrize(
    "options",
    [ScoreOptions(return_tokens=True), ScoreOptions(distribution=Distribution(words=True))],
    ids=["tokens", "words"],
)
def test_per_token_results_are_refused_rather_than_fetched_and_dropped(
    options: ScoreOptions,
) -> None:
    with pytest.raises(ValueError, match="no column"):
        RemoteScorer(Servers(["http://127.0.0.1:9"]), options)


def test_servers_read_the_api_key_where_they_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read on each Ray worker, the driver's $LMSCORE_API_KEY was missed on a cluster.
    monkeypatch.setenv("LMSCORE_API_KEY", "driver-key")
    assert Servers(["http://a:8000"]).api_key == "driver-key"
    assert Servers(["http://a:8000"], api_key="own").api_key == "own"
    monkeypatch.delenv("LMSCORE_API_KEY")
    assert Servers(["http://a:8000"]).api_key is None
