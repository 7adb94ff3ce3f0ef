"""REST clients: ``Client`` (blocking) and ``AsyncClient`` (asyncio), both on httpx with
connection pooling, retries on 429/503/connection errors that honour Retry-After, and the
contract's error JSON raised as ``LMScoreError`` subclasses."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from lmscore_client.compare import CompareResponse, compare_payload
from lmscore_client.continuations import ContinuationResponse, continuations_payload
from lmscore_client.errors import ConnectionFailedError, LMScoreError, from_http
from lmscore_client.payloads import Conversation, Distribution, chat_payload, text_payload
from lmscore_client.results import ModelCard, ScoreResponse
from lmscore_client.retry import RetryPolicy, parse_retry_after

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 300.0


def _error_of(response: httpx.Response) -> LMScoreError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return from_http(response.status_code, body, retry_after)


class _Base:
    """What the blocking and async clients share: configuration and the retry decision."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("LMSCORE_API_KEY")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.headers = {"user-agent": "lmscore-client", **(headers or {})}
        if self.api_key:
            self.headers["authorization"] = f"Bearer {self.api_key}"

    def _failure(
        self, result: httpx.Response | httpx.TransportError
    ) -> tuple[LMScoreError, bool] | None:
        """None for a success; else the error and whether it may be retried."""
        if isinstance(result, httpx.TransportError):
            detail = f"{type(result).__name__}: {result}".rstrip(": ")
            error = ConnectionFailedError(f"cannot reach {self.base_url}: {detail}")
            return error, self.retry.retry_connection_errors
        if result.is_success:
            return None
        return _error_of(result), result.status_code in self.retry.retry_statuses


class Client(_Base):
    """Blocking REST client. Use as a context manager or call ``close()``.

    ``timeout`` is seconds per HTTP attempt; ``api_key`` defaults to ``$LMSCORE_API_KEY``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retry, headers)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    def request(self, method: str, path: str, json: Any = None) -> Any:
        """Send with retries; return the parsed JSON body or raise ``LMScoreError``."""
        started = self._clock()
        failures = 0
        while True:
            try:
                result: httpx.Response | httpx.TransportError = self._http.request(
                    method, path, json=json
                )
            except httpx.TransportError as exc:
                result = exc
            failure = self._failure(result)
            if failure is None:
                assert isinstance(result, httpx.Response)
                return result.json()
            error, retryable = failure
            failures += 1
            delay = self.retry.next_delay_s(failures, self._clock() - started, error.retry_after_s)
            if not retryable or delay is None:
                raise error
            self._sleep(delay)

    def score_text(
        self,
        texts: str | Sequence[str],
        *,
        model: str = "default",
        return_tokens: bool = False,
        top_k: int = 0,
        prepend_bos: bool = False,
        overflow: str = "error",
        stride: int | None = None,
        reference: str | None = None,
        distribution: Distribution | None = None,
    ) -> ScoreResponse:
        """Score plain texts: every token given all tokens before it (a single string is
        one text). ``top_k`` (0-20) needs ``return_tokens``; ``overflow`` is ``error``,
        ``truncate`` or ``sliding_window`` (windows advance by ``stride`` tokens);
        ``reference`` names a server-side profile (adds ``percentile``/``is_outlier``)."""
        body = text_payload(
            texts,
            model=model,
            return_tokens=return_tokens,
            top_k=top_k,
            prepend_bos=prepend_bos,
            overflow=overflow,
            stride=stride,
            reference=reference,
            distribution=distribution,
        )
        return ScoreResponse.from_json(self.request("POST", "/v1/score/text", body))

    def score_chat(
        self,
        conversations: Sequence[Conversation] | Conversation,
        *,
        model: str = "default",
        score_roles: Sequence[str] | None = None,
        include_end_of_turn: bool = False,
        return_tokens: bool = False,
        top_k: int = 0,
        overflow: str = "error",
        stride: int | None = None,
        reference: str | None = None,
        distribution: Distribution | None = None,
    ) -> ScoreResponse:
        """Score conversations rendered with the model's chat template: the content of
        messages whose role is in ``score_roles`` (server default ``["assistant"]``)."""
        body = chat_payload(
            conversations,
            model=model,
            score_roles=score_roles,
            include_end_of_turn=include_end_of_turn,
            return_tokens=return_tokens,
            top_k=top_k,
            overflow=overflow,
            stride=stride,
            reference=reference,
            distribution=distribution,
        )
        return ScoreResponse.from_json(self.request("POST", "/v1/score/chat", body))

    def score_continuations(
        self,
        context: str,
        continuations: Sequence[str],
        *,
        model: str = "default",
        return_tokens: bool = False,
    ) -> ContinuationResponse:
        """Each continuation's log-likelihood given ``context`` (computed once)."""
        body = continuations_payload(
            context, continuations, model=model, return_tokens=return_tokens
        )
        return ContinuationResponse.from_json(self.request("POST", "/v1/score/continuations", body))

    def compare(
        self,
        models: Sequence[str],
        texts: str | Sequence[str],
        *,
        token_level: bool = False,
        return_tokens: bool = False,
    ) -> CompareResponse:
        """``texts`` under two models ``[a, b]``: both models' scores and the bits-per-byte
        ratio; with ``token_level`` (identical tokenizers) KL(a || b), top-1 agreement and
        Binoculars (a observes, b performs)."""
        body = compare_payload(models, texts, token_level=token_level, return_tokens=return_tokens)
        return CompareResponse.from_json(self.request("POST", "/v1/score/compare", body))

    def models(self) -> list[ModelCard]:
        """The served models."""
        return [ModelCard.from_json(m) for m in self.request("GET", "/v1/models")["data"]]

    def completions(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/completions`` (OpenAI legacy shape), returned as parsed JSON."""
        result: dict[str, Any] = self.request("POST", "/v1/completions", body)
        return result

    def ready(self) -> bool:
        """Whether ``GET /readyz`` answers 200 (no retries)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio REST client; the same methods as ``Client``, awaited."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retry, headers)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        """Send with retries; return the parsed JSON body or raise ``LMScoreError``."""
        started = self._clock()
        failures = 0
        while True:
            try:
                result: httpx.Response | httpx.TransportError = await self._http.request(
                    method, path, json=json
                )
            except httpx.TransportError as exc:
                result = exc
            failure = self._failure(result)
            if failure is None:
                assert isinstance(result, httpx.Response)
                return result.json()
            error, retryable = failure
            failures += 1
            delay = self.retry.next_delay_s(failures, self._clock() - started, error.retry_after_s)
            if not retryable or delay is None:
                raise error
            await self._sleep(delay)

    async def score_text(
        self,
        texts: str | Sequence[str],
        *,
        model: str = "default",
        return_tokens: bool = False,
        top_k: int = 0,
        prepend_bos: bool = False,
        overflow: str = "error",
        stride: int | None = None,
        reference: str | None = None,
        distribution: Distribution | None = None,
    ) -> ScoreResponse:
        """Score plain texts: every token given all tokens before it (a single string is
        one text). ``top_k`` (0-20) needs ``return_tokens``; ``overflow`` is ``error``,
        ``truncate`` or ``sliding_window`` (windows advance by ``stride`` tokens);
        ``reference`` names a server-side profile (adds ``percentile``/``is_outlier``)."""
        body = text_payload(
            texts,
            model=model,
            return_tokens=return_tokens,
            top_k=top_k,
            prepend_bos=prepend_bos,
            overflow=overflow,
            stride=stride,
            reference=reference,
            distribution=distribution,
        )
        return ScoreResponse.from_json(await self.request("POST", "/v1/score/text", body))

    async def score_chat(
        self,
        conversations: Sequence[Conversation] | Conversation,
        *,
        model: str = "default",
        score_roles: Sequence[str] | None = None,
        include_end_of_turn: bool = False,
        return_tokens: bool = False,
        top_k: int = 0,
        overflow: str = "error",
        stride: int | None = None,
        reference: str | None = None,
        distribution: Distribution | None = None,
    ) -> ScoreResponse:
        """Score conversations rendered with the model's chat template: the content of
        messages whose role is in ``score_roles`` (server default ``["assistant"]``)."""
        body = chat_payload(
            conversations,
            model=model,
            score_roles=score_roles,
            include_end_of_turn=include_end_of_turn,
            return_tokens=return_tokens,
            top_k=top_k,
            overflow=overflow,
            stride=stride,
            reference=reference,
            distribution=distribution,
        )
        return ScoreResponse.from_json(await self.request("POST", "/v1/score/chat", body))

    async def score_continuations(
        self,
        context: str,
        continuations: Sequence[str],
        *,
        model: str = "default",
        return_tokens: bool = False,
    ) -> ContinuationResponse:
        """Each continuation's log-likelihood given ``context`` (computed once)."""
        body = continuations_payload(
            context, continuations, model=model, return_tokens=return_tokens
        )
        return ContinuationResponse.from_json(
            await self.request("POST", "/v1/score/continuations", body)
        )

    async def compare(
        self,
        models: Sequence[str],
        texts: str | Sequence[str],
        *,
        token_level: bool = False,
        return_tokens: bool = False,
    ) -> CompareResponse:
        """``texts`` under two models ``[a, b]``: both models' scores and the bits-per-byte
        ratio; with ``token_level`` (identical tokenizers) KL(a || b), top-1 agreement and
        Binoculars (a observes, b performs)."""
        body = compare_payload(models, texts, token_level=token_level, return_tokens=return_tokens)
        return CompareResponse.from_json(await self.request("POST", "/v1/score/compare", body))

    async def models(self) -> list[ModelCard]:
        """The served models."""
        body = await self.request("GET", "/v1/models")
        return [ModelCard.from_json(m) for m in body["data"]]

    async def completions(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/completions`` (OpenAI legacy shape), returned as parsed JSON."""
        result: dict[str, Any] = await self.request("POST", "/v1/completions", body)
        return result

    async def ready(self) -> bool:
        """Whether ``GET /readyz`` answers 200 (no retries)."""
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
