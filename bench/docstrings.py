"""A corpus of real English prose that needs no download: the docstrings of Python's
standard library, written by people over three decades. Deterministic for a given Python."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    found = []
    for node in nodes:
        doc = ast.get_docstring(node)
        if doc:
            found.append(" ".join(doc.split()))
    return found


def stdlib_docstrings(min_chars: int, max_chars: int, limit: int) -> list[str]:
    """Unique docstrings of ``min_chars``..``max_chars`` characters, mostly prose."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    texts: list[str] = []
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        for doc in _docstrings(path):
            letters = sum(c.isalpha() or c == " " for c in doc)
            if min_chars <= len(doc) <= max_chars and letters > 0.85 * len(doc) and doc not in seen:
                seen.add(doc)
                texts.append(doc)
                if len(texts) >= limit:
                    return texts
    return texts
