"""Helpers shared by the Ray tests (a module of its own: `from conftest import` is
ambiguous once several test folders have a conftest.py)."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from corpus import ENGLISH, OTHER

from lmscore_client import Client, TextResult

CONTEXT = 128
SERVER_ARGS = ["--dtype", "float32", "--max-context", str(CONTEXT)]
CHAT = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]


def corpus_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` rows with ids: short word windows of real prose in several languages,
    every 50th a conversation (``messages``), every 97th too long for the context."""
    words = [w for text in ENGLISH + OTHER for w in text.split()]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for index in range(count):
        row: dict[str, Any] = {"id": f"row-{index:05d}"}
        if index % 97 == 13:
            row["text"] = " ".join(words) * 2  # over the context: a per-row error
        elif index % 50 == 7:
            row["messages"] = CHAT
        else:
            start = rng.randrange(len(words) - 12)
            row["text"] = " ".join(words[start : start + rng.randint(3, 10)])
        rows.append(row)
    return rows


def is_too_long(row: dict[str, Any]) -> bool:
    return len(row.get("text") or "") > 1000


def direct_scores(url: str, rows: list[dict[str, Any]]) -> dict[str, TextResult | None]:
    """Each row's result from plain API calls (None for the rows over the context)."""
    out: dict[str, TextResult | None] = {r["id"]: None for r in rows if is_too_long(r)}
    chats = [r for r in rows if r.get("messages")]
    texts = [r for r in rows if not r.get("messages") and not is_too_long(r)]
    with Client(url) as client:
        for start in range(0, len(texts), 64):
            group = texts[start : start + 64]
            results = client.score_text([r["text"] for r in group]).results
            out.update({r["id"]: result for r, result in zip(group, results, strict=True)})
        if chats:
            results = client.score_chat([r["messages"] for r in chats]).results
            out.update({r["id"]: result for r, result in zip(chats, results, strict=True)})
    return out
