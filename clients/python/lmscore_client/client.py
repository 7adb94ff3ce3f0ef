"""REST clients: ``Client`` (blocking) and ``AsyncClient`` (asyncio), both on httpx with
connection pooling, retries on 429/503/connection errors that honour Retry-After, and the
contract's error JSON raised as ``LMScoreError`` subclasses."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from lmscore_client import build
from lmscore_client.build import ChatFields, Conversation, ScoreOptions, TextFields
from lmscore_client.compare import CompareResponse
from lmscore_client.continuations import ContinuationResponse
from lmscore_client.errors import (
    ConnectionFailedError,
    InvalidRequestError,
    LMScoreError,
    RequestTimeoutError,
    UnexpectedResponseError,
    from_http,
)
from lmscore_client.results import ModelCard, ScoreResponse
from lmscore_client.retry import RetryPolicy, parse_retry_after

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 300.0
T = TypeVar("T")


def encode_body(body: Any) -> dict[str, Any]:
    """``httpx`` keyword arguments sending ``body`` as JSON (none for no body).

    UTF-8 JSON where the text allows it. A lone surrogate (``"\\udc80"`` in scraped JSON
    decodes to one) cannot be UTF-8: such a body goes as ASCII JSON, escapes and all, so
    the server judges it and names the text (a 422), instead of the request failing here.
    """
    if body is None:
        return {}
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False)
        content = text.encode("utf-8")
    except UnicodeEncodeError:
        content = json.dumps(body, allow_nan=False).encode("ascii")
    except ValueError as exc:  # NaN or infinity: not JSON
        raise InvalidRequestError(f"the request cannot be sent as JSON: {exc}") from exc
    return {"content": content, "headers": {"content-type": "application/json"}}


def _json_of(response: httpx.Response) -> Any:
    """The body of a success as JSON; UnexpectedResponseError when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        kind = response.headers.get("content-type", "no content type")
        raise UnexpectedResponseError(
            f"the answer to {response.request.method} {response.request.url.path} is not "
            f"JSON ({kind}): {response.text[:200]!r}",
            status=response.status_code,
        ) from exc


def _parsed(api_call: build.ApiCall[T], body: Any) -> T:
    """``api_call``'s answer parsed; UnexpectedResponseError when it lacks the route's
    fields or holds the wrong types."""
    try:
        return api_call.parse(body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnexpectedResponseError(
            f"the answer to {api_call.method} {api_call.path} does not have the shape "
            f"lmscore gives it ({type(exc).__name__}: {exc})",
            status=200,
        ) from exc


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
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the server URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("LMSCORE_API_KEY")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        # Case-insensitive, one value per name: the caller's own headers win over the
        # defaults (two Authorization headers may be refused, or the wrong one read).
        self.headers = httpx.Headers({"user-agent": "lmscore-client"})
        if self.api_key:
            self.headers["authorization"] = f"Bearer {self.api_key}"
        self.headers.update(headers or {})

    def _failure(
        self, result: httpx.Response | httpx.RequestError
    ) -> tuple[LMScoreError, bool] | None:
        """None for a success; else the error and whether it may be retried."""
        if isinstance(result, httpx.ReadTimeout | httpx.WriteTimeout):
            # The request reached the server, which may still be working on it: retrying
            # would only add load. This is the client's own limit, not the server's.
            message = f"no answer from {self.base_url} within the client's timeout of "
            return RequestTimeoutError(f"{message}{self.timeout:g} s; raise the timeout"), False
        if isinstance(result, httpx.UnsupportedProtocol):
            return ConnectionFailedError(f"cannot reach {self.base_url}: {result}"), False
        if not isinstance(result, httpx.Response | httpx.TransportError):
            # An answer arrived but could not be read (bad content encoding, a redirect
            # loop): not lmscore's answer, and not worth repeating.
            detail = f"{type(result).__name__}: {result}"
            return UnexpectedResponseError(f"the answer from {self.base_url}: {detail}"), False
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
                result: httpx.Response | httpx.RequestError = self._http.request(
                    method, path, **encode_body(json)
                )
            except httpx.RequestError as exc:
                result = exc
            failure = self._failure(result)
            if failure is None:
                assert isinstance(result, httpx.Response)
                return _json_of(result)
            error, retryable = failure
            failures += 1
            delay = self.retry.next_delay_s(failures, self._clock() - started, error.retry_after_s)
            if not retryable or delay is None:
                raise error
            self._sleep(delay)

    def call(self, api_call: build.ApiCall[T]) -> T:
        """Send a built request (``lmscore_client.build``) and parse its answer."""
        return _parsed(api_call, self.request(api_call.method, api_call.path, api_call.body))

    def score_text(
        self,
        texts: str | Sequence[str],
        options: ScoreOptions | None = None,
        **fields: Unpack[TextFields],
    ) -> ScoreResponse:
        """Score plain texts: every token given all tokens before it (a single string is
        one text). The options are ``ScoreOptions``' (an object, keywords, or both)."""
        return self.call(build.score_text(texts, build.options_with(options, fields)))

    def score_chat(
        self,
        conversations: Sequence[Conversation] | Conversation,
        options: ScoreOptions | None = None,
        **fields: Unpack[ChatFields],
    ) -> ScoreResponse:
        """Score conversations rendered with the model's chat template: the content of
        messages whose role is in ``score_roles`` (server default ``["assistant"]``)."""
        return self.call(build.score_chat(conversations, build.options_with(options, fields)))

    def score_continuations(
        self,
        context: str,
        continuations: Sequence[str],
        *,
        model: str | None = None,
        return_tokens: bool = False,
        prepend_bos: bool | None = None,
    ) -> ContinuationResponse:
        """Each continuation's log-likelihood given ``context`` (computed once); with
        ``prepend_bos`` the model's BOS before the context (unset: where its tokenizer adds
        one by default)."""
        return self.call(
            build.score_continuations(
                context,
                continuations,
                model=model,
                return_tokens=return_tokens,
                prepend_bos=prepend_bos,
            )
        )

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
        return self.call(
            build.compare(models, texts, token_level=token_level, return_tokens=return_tokens)
        )

    def models(self) -> list[ModelCard]:
        """The served models."""
        return self.call(build.models())

    def completions(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/completions`` (OpenAI legacy shape), returned as parsed JSON."""
        return self.call(build.completions(body))

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
                result: httpx.Response | httpx.RequestError = await self._http.request(
                    method, path, **encode_body(json)
                )
            except httpx.RequestError as exc:
                result = exc
            failure = self._failure(result)
            if failure is None:
                assert isinstance(result, httpx.Response)
                return _json_of(result)
            error, retryable = failure
            failures += 1
            delay = self.retry.next_delay_s(failures, self._clock() - started, error.retry_after_s)
            if not retryable or delay is None:
                raise error
            await self._sleep(delay)

    async def call(self, api_call: build.ApiCall[T]) -> T:
        """Send a built request (``lmscore_client.build``) and parse its answer."""
        body = await self.request(api_call.method, api_call.path, api_call.body)
        return _parsed(api_call, body)

    async def score_text(
        self,
        texts: str | Sequence[str],
        options: ScoreOptions | None = None,
        **fields: Unpack[TextFields],
    ) -> ScoreResponse:
        """Score plain texts: every token given all tokens before it (a single string is
        one text). The options are ``ScoreOptions``' (an object, keywords, or both)."""
        return await self.call(build.score_text(texts, build.options_with(options, fields)))

    async def score_chat(
        self,
        conversations: Sequence[Conversation] | Conversation,
        options: ScoreOptions | None = None,
        **fields: Unpack[ChatFields],
    ) -> ScoreResponse:
        """Score conversations rendered with the model's chat template: the content of
        messages whose role is in ``score_roles`` (server default ``["assistant"]``)."""
        return await self.call(build.score_chat(conversations, build.options_with(options, fields)))

    async def score_continuations(
        self,
        context: str,
        continuations: Sequence[str],
        *,
        model: str | None = None,
        return_tokens: bool = False,
        prepend_bos: bool | None = None,
    ) -> ContinuationResponse:
        """Each continuation's log-likelihood given ``context`` (computed once); with
        ``prepend_bos`` the model's BOS before the context (unset: where its tokenizer adds
        one by default)."""
        return await self.call(
            build.score_continuations(
                context,
                continuations,
                model=model,
                return_tokens=return_tokens,
                prepend_bos=prepend_bos,
            )
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
        return await self.call(
            build.compare(models, texts, token_level=token_level, return_tokens=return_tokens)
        )

    async def models(self) -> list[ModelCard]:
        """The served models."""
        return await self.call(build.models())

    async def completions(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/completions`` (OpenAI legacy shape), returned as parsed JSON."""
        return await self.call(build.completions(body))

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
