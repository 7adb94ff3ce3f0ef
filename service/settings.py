"""Server configuration: one pydantic-settings model, read from flags and ``LMSCORE_*`` env vars.

Every field has a default and a description; the CLI flags are generated from these fields
(``max_batch_tokens`` <-> ``--max-batch-tokens`` <-> ``LMSCORE_MAX_BATCH_TOKENS``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# gRPC's message size options are C ints.
GRPC_INT_MAX = 2**31 - 1


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmscore"


class Settings(BaseSettings):
    """Everything ``lmscore serve`` can be told."""

    model_config = SettingsConfigDict(env_prefix="LMSCORE_", extra="ignore")

    model: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="NAME=SPEC, repeatable. SPEC is 'default' (the embedded model), a local "
        "directory, a local .gguf file or a hub id (optionally @revision). "
        "Env: comma-separated. With none, the embedded model is served as 'default'.",
    )
    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="Inference backend: transformers (default), or vllm (from `make install-vllm`).",
    )
    gpu_memory_utilization: float = Field(
        0.8,
        gt=0,
        le=1,
        description="vLLM: share of GPU memory for weights and KV cache. Kept below vLLM's 0.9: "
        "vLLM does not reserve memory for prompt logprobs when it profiles.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs per model.")
    max_num_batched_tokens: int | None = Field(
        None, ge=1, description="vLLM: tokens per engine step (vLLM's default when unset)."
    )
    enforce_eager: bool | None = Field(
        None,
        description="vLLM: no CUDA graphs / compilation. Default: on without CUDA, off with it.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16", "bf16-mixed"] = Field(
        "auto",
        description="Precision. 'auto' picks bfloat16 on CUDA (float16 on GPUs without "
        "bf16, such as T4 and V100) and on CPUs with AMX or AVX512-BF16, float32 elsewhere. bfloat16 moves per-text PPL by ~1% (median) and "
        "up to 15% on very short texts; 'bf16-mixed' (float32 weights, bf16 matmuls under "
        "autocast; transformers backend) about halves that; float32 is exact. "
        "Log-softmax is always float32.",
    )
    attention: Literal["auto", "ragged", "padded"] = Field(
        "auto",
        description="transformers backend: how a batch is laid out. 'ragged' runs the batch "
        "as one token stream with attention per text (no padding); 'padded' right-pads "
        "every text to the longest. 'auto' is ragged where the model supports it (checked "
        "at load time), padded otherwise.",
    )
    compile: Literal["off", "on", "auto"] = Field(
        "off",
        description="transformers backend, ragged batches: compile each decoder layer with "
        "torch.compile (inductor) at warm-up, attention left eager. On a 2-core AMX CPU in "
        "bf16 batched passes ran 1.09x (short texts) to 1.13x (documents) faster and a lone "
        "short text ~5% slower (dynamo's per-call overhead); start-up takes ~30 s more the "
        "first time, ~6 s once inductor's on-disk cache holds the kernels. bf16 scores move "
        "against eager ones (median 1.4% of a text's PPL): compare scores under one "
        "setting. 'auto' compiles on CPUs where a C++ compiler is installed; 'on' also on "
        "CUDA, where it measured 0.94-0.99x eager on an H100 (passes there are bound by "
        "kernel launches). If compiling fails the layers run eagerly and the log says why.",
    )
    pack_weights: Literal["auto", "off"] = Field(
        "auto",
        description="transformers backend on CPU, bf16: pack the decoder layers' linear "
        "weights once into oneDNN's blocked layout, where plain matmuls reorder them on "
        "every call. A probe at load checks the logits stay within bf16 rounding; bf16 "
        "scores move as they do between batches (another GEMM blocking). On a 2-core AMX "
        "CPU two lanes side by side ran 1.07x faster in-process and a lone short text's "
        "forward 1.15x (bench/NOTES.md). 'auto' packs where oneDNN has bf16 kernels and "
        "the layers are not compiled; 'off' keeps plain matmuls.",
    )
    trace_body: Literal["auto", "off"] = Field(
        "auto",
        description="transformers backend on CPU, ragged batches: trace the model's body "
        "with TorchScript at load, so a forward pass runs as one call that does not hold "
        "Python's GIL (the event loop and a second lane no longer stall it). On a 2-core AMX "
        "CPU, bf16, two lanes of 16 short texts a pass scored 1.18x eager (bench/NOTES.md). "
        "'auto' traces models with plain causal attention and length-independent rotary "
        "embeddings, where a probe of another shape matches the eager body; token trees, "
        "compiled layers and bf16-mixed run eagerly. 'off' runs every pass eagerly.",
    )
    cpu_lanes: int | None = Field(
        None,
        ge=1,
        description="transformers backend on CPU: forward passes that may run side by side, "
        "each on an equal share of the cores; a pass alone still gets every core. Default: "
        "2 where torch runs 2 threads (on a 2-core AMX CPU, bf16, short texts under load "
        "scored 1.13-1.21x faster than with 1; bench/NOTES.md), else 1 (passes take turns "
        "on all threads). "
        "More lanes hold more passes' activations at once. Compiled layers use 1.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run; 'auto' is CUDA when available, else CPU."
    )
    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind to.")
    http_port: int = Field(8000, ge=0, le=65535, description="REST port; 0 picks a free one.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    max_context: int | None = Field(
        None, ge=2, description="Cap on tokens per forward window, below the model's own context."
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens one forward pass may compute: real tokens for ragged batches, "
        "longest x count for padded ones. Default: 2048 on CPU (cache-sized matmuls), "
        "16384 on CUDA.",
    )
    max_batch_size: int = Field(64, ge=1, description="Sequences one forward pass may hold.")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=600_000,
        allow_inf_nan=False,
        description="Milliseconds a batch waits for company after its first item arrives. "
        "0 (as vLLM, TEI and Triton do by default): a batch closes as soon as the forward "
        "thread is free, and what arrives during a pass makes the next batch, so a lone "
        "request never waits for company that is not coming. Raise it where clients send "
        "one text per request in bursts from an idle server.",
    )
    rejoin_wait: float = Field(
        0.1,
        ge=0,
        le=1,
        description="After a forward pass, the longest the next batch waits for the callers "
        "that pass answered to send their next requests, as a share of a recent pass's "
        "duration; it ends early once as many new requests have come in as the pass finished. "
        "Callers that keep a fixed number of requests in flight (a pipeline with a "
        "concurrency limit) then share one pass instead of splitting into halves that take "
        "turns, each pass half full. A lone caller never waits; a caller that does not come "
        "back costs the next batch at most this share of a pass. 0 turns it off.",
    )
    max_queue: int = Field(
        1024, ge=1, description="Items (texts, windows) that may wait per model; more is 429."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="Seconds queued and running work may take to finish on SIGTERM."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="Seconds a request may take before it fails with 504."
    )
    max_texts_per_request: int = Field(
        1024, ge=1, description="Texts (or conversations) one request may carry; more is 413."
    )
    max_compare_chars: int = Field(
        4000,
        ge=1,
        description="Characters (and tokens) of text one token-level /v1/score/compare "
        "request may carry: it holds both models' full float32 distributions at every "
        "position (~200 kB per token per model with a 49k vocabulary); more is 413.",
    )
    max_token_details: int = Field(
        500_000,
        ge=1,
        description="Per-token entries one request may return (return_tokens: tokens x "
        "(1 + top_k); on the OpenAI doors, prompt tokens x (1 + logprobs) with echo, plus "
        "x (1 + prompt_logprobs)); each takes about a kilobyte while the answer is built; "
        "more is 413 naming the field that asked.",
    )
    max_chars_per_text: int = Field(
        1_000_000,
        ge=1,
        description="Characters one text may carry (a message's content, a context, a "
        "continuation, a prompt; ids for a token-id prompt); more is 413.",
    )
    max_messages_per_conversation: int = Field(
        512, ge=1, description="Messages one conversation may carry; more is 413."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        le=GRPC_INT_MAX // 2,  # gRPC takes twice this as a 32-bit limit
        description="Largest request body (REST) or message (gRPC) in bytes; more is 413 / "
        "INVALID_ARGUMENT (over twice this, gRPC itself answers RESOURCE_EXHAUSTED).",
    )
    reference: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="NAME=PROFILE.json, repeatable: reference profiles (from `lmscore-client "
        "calibrate`) that requests can name for percentile and is_outlier. A profile made with "
        "another model or revision is refused at start-up. Env: comma-separated.",
    )
    grpc_max_send_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=GRPC_INT_MAX,
        description="Largest gRPC response in bytes (requests are capped by --max-body-bytes).",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys (env: comma-separated). When set, scoring endpoints "
        "need 'Authorization: Bearer KEY'.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one API key per line (blank lines and # comments ignored)."
    )
    protect_metrics: bool = Field(
        False, description="Require an API key for /metrics too (health probes stay open)."
    )
    cors_allow_origin: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins a browser page may call the REST API from (repeatable; env: "
        "comma-separated; '*' for any). Empty: no CORS headers, so browsers on other origins "
        "are refused.",
    )
    memory_trim_after_idle_s: float = Field(
        0.5,
        ge=0,
        description="Once the server has had nothing in flight this many seconds, hand freed "
        "heap memory back to the system (glibc malloc_trim); 0 never. Keeps resident memory "
        "flat over days of varied batch shapes; never runs while a request is in flight.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where dequantized GGUF weights and file hashes are cached.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )

    @field_validator("model", "api_keys", "reference", "cors_allow_origin", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys", mode="after")
    @classmethod
    def _no_blank_key(cls, value: list[str]) -> list[str]:
        # "--api-key $KEY" with KEY unset would turn auth on with a key any client sends.
        keys = [key.strip() for key in value]
        if not all(keys):
            raise ValueError("an API key is empty or blank (an unset variable?)")
        return keys

    @field_validator("cache_dir", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("cors_allow_origin", mode="after")
    @classmethod
    def _split_each_origin(cls, value: list[str]) -> list[str]:
        # An origin holds no comma, so "--cors-allow-origin a,b" lists two, as the env does.
        return [part.strip() for item in value for part in item.split(",") if part.strip()]

    @field_validator("api_keys_file", mode="after")
    @classmethod
    def _keys_file_has_keys(cls, value: Path | None) -> Path | None:
        # An empty or missing keys file would start the server with auth off, unnoticed.
        if value is not None and not _keys_in(value):
            raise ValueError(f"{value} holds no API key (one per line)")
        return value

    def for_model(self, options: dict[str, str]) -> Settings:
        """These settings with one model's overrides (from ``--model NAME=SPEC?k=v``),
        validated like the flags (a bad value raises ValueError naming it)."""
        if not options:
            return self
        merged = {**self.model_dump(), **options}
        return type(self).model_validate(merged)

    def all_api_keys(self) -> list[str]:
        """Keys from ``api_keys`` and ``api_keys_file`` together."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            keys += _keys_in(self.api_keys_file)
        return keys


def _keys_in(path: Path) -> list[str]:
    """The keys of a keys file: one per line, blank lines and # comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no key's
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
