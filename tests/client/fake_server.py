"""A tiny stand-in for ``lmscore serve`` (threading HTTP on 127.0.0.1:0) with deterministic
fake scores, random latency (so responses finish out of order) and switchable outages."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What GET /v1/models lists: one model, as a server in bf16 would describe it.
FAKE_MODEL_CARD = {
    "id": "default", "object": "model", "created": 0, "owned_by": "lmscore",
    "backend": "transformers", "dtype": "bfloat16", "device": "cpu", "max_context": 8192,
    "revision": "sha256:fake", "has_chat_template": True,
}  # fmt: skip


def fake_result(text: str) -> dict[str, Any]:
    """The fake scores of a text: ppl = 1 + len(text); one-word texts score nothing."""
    num_tokens = len(text.split()) + 1 if " " in text else 1
    scored = num_tokens - 1
    if scored == 0:
        return {
            "num_tokens": 1, "num_scored_tokens": 0, "sum_logprob": 0.0, "mean_nll": None,
            "ppl": None, "bits_per_byte": None, "bits_per_char": None, "truncated": False,
        }  # fmt: skip
    ppl = 1.0 + len(text)
    nll = math.log(ppl)
    bits = nll * scored / math.log(2) / len(text)
    return {
        "num_tokens": num_tokens, "num_scored_tokens": scored, "sum_logprob": -nll * scored,
        "mean_nll": nll, "ppl": ppl, "bits_per_byte": bits * len(text) / len(text.encode()),
        "bits_per_char": bits, "truncated": False, "extra_field_from_the_future": 1,
    }  # fmt: skip


def _refusal(text: object, overflow: str) -> str | None:
    """Why the server would refuse a text (422), as the real one does, or None. A text
    holding "LONG" stands for one longer than the model's context."""
    if not isinstance(text, str) or not text:
        return "empty"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate is not valid Unicode"
    if "LONG" in text and overflow == "error":
        return "the text exceeds the model's context; use overflow='truncate'"
    return None


class FakeServer:
    """``fail_after``: successful score requests before every request answers 503.
    ``timeouts``: score requests answered 504 (the server's deadline passed) first; a
    request with a text holding "SLOW" is answered 504 every time."""

    def __init__(
        self,
        fail_after: int | None = None,
        max_delay_s: float = 0.02,
        max_texts: int = 1024,
        timeouts: int = 0,
    ) -> None:
        self.fail_after = fail_after
        self.timeouts = timeouts
        self.max_delay_s = max_delay_s
        self.max_texts = max_texts  # more texts in one request: 413, as the server says
        self.lock = threading.Lock()
        self.served = 0
        self.inflight = 0
        self.max_inflight = 0
        self.batch_sizes: list[int] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if self.fail_after is not None and self.served >= self.fail_after:
                return 503, {"error": {"type": "unavailable", "message": "draining", "param": None}}
            if self.timeouts > 0:
                self.timeouts -= 1
                error = {"type": "timeout", "message": "deadline passed", "param": None}
                return 504, {"error": error}
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            time.sleep(random.uniform(0, self.max_delay_s))
            if path == "/v1/score/chat":
                name, inputs = "conversations", []
                for i, conv in enumerate(body["conversations"]):
                    if not isinstance(conv, list) or not all(isinstance(m, dict) for m in conv):
                        error = {
                            "type": "invalid_request",
                            "message": "bad",
                            "param": f"{name}[{i}]",
                        }
                        return 422, {"error": error}
                    inputs.append(" ".join(str(m.get("content")) for m in conv))
            else:
                inputs, name = body["texts"], "texts"
            if len(inputs) > self.max_texts:
                error = {"type": "too_large", "message": "too many", "param": name}
                return 413, {"error": error}
            for i, text in enumerate(inputs):
                if refusal := _refusal(text, body.get("overflow", "error")):
                    error = {"type": "invalid_request", "message": refusal, "param": f"{name}[{i}]"}
                    return 422, {"error": error}
                if "SLOW" in text:
                    error = {"type": "timeout", "message": "deadline passed", "param": None}
                    return 504, {"error": error}
                if "BOOM" in text:
                    return 500, {"error": {"type": "internal", "message": "boom", "param": None}}
            results = [fake_result(t) for t in inputs]
            if body.get("overflow") == "truncate":
                results = [
                    {**r, "truncated": "LONG" in t} for r, t in zip(results, inputs, strict=True)
                ]
            with self.lock:
                self.served += 1
                self.batch_sizes.append(len(inputs))
            aggregate = {"num_scored_tokens": 0, "sum_logprob": 0.0, "mean_nll": None, "ppl": None}
            return 200, {
                "model": body.get("model", "default"), "model_revision": "sha256:fake",
                "results": results, "aggregate": aggregate, "usage": {"prompt_tokens": 1},
            }  # fmt: skip
        finally:
            with self.lock:
                self.inflight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    self.send_error(404)
                    return
                self._send(200, {"object": "list", "data": [FAKE_MODEL_CARD]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                self._send(*server.answer(self.path, body))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status == 503:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(data)

        return Handler
