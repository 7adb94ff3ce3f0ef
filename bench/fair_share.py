"""How long a one-text request waits behind a request of many texts.

Starts ``lmscore serve`` (default model and dtype), sends one request of ``--large`` short
texts (stdlib docstrings, 60-300 characters), and one second later ``--small`` one-text
requests one after another; prints how long each took and how long the large one took.
The batcher's fair order (see ``service/batching/batcher.py``) should answer the small ones
about two forward passes after they arrive, not after the whole large request. A benchmark,
not a test: the seconds depend on the machine.

    .venv/bin/python bench/fair_share.py [--large 600] [--small 3] [--model SOURCE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from docstrings import stdlib_docstrings
from server_process import start_server, stop_server

PATH = "/v1/score/text"


async def measure(url: str, large: list[str], small: int) -> tuple[float, list[float]]:
    """Seconds the large request took, and each small one."""
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        (await client.post(PATH, json={"texts": ["warm up"]})).raise_for_status()
        started = time.perf_counter()
        big = asyncio.create_task(client.post(PATH, json={"texts": large}))
        await asyncio.sleep(1.0)  # the large request is tokenized and queued by now
        waits: list[float] = []
        for k in range(small):
            sent = time.perf_counter()
            answer = await client.post(PATH, json={"texts": [f"a small request, number {k}"]})
            answer.raise_for_status()
            waits.append(time.perf_counter() - sent)
        (await big).raise_for_status()
        return time.perf_counter() - started, waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=600, help="texts in the large request")
    parser.add_argument("--small", type=int, default=3, help="one-text requests after it")
    parser.add_argument("--model", default="default", help="model source (default: embedded)")
    args = parser.parse_args()
    texts = stdlib_docstrings(60, 300, args.large)
    log = Path("bench/results/fair_share-server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--model", f"default={args.model}", "--request-timeout-s", "900"]
    flags += ["--max-queue", str(10 * len(texts))]
    server = start_server(flags, log, timeout_s=600)
    try:
        large_s, waits = asyncio.run(measure(server.url, texts, args.small))
    finally:
        stop_server(server)
    print(f"large request ({len(texts)} texts): {large_s:.2f} s")
    print("one-text requests after it: " + ", ".join(f"{w:.2f} s" for w in waits))


if __name__ == "__main__":
    main()
