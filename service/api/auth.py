"""API-key checks shared by the doors: ``Authorization: Bearer KEY``, constant-time compare."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from service.errors import Unauthorized


class KeyChecker:
    """Accepts a bearer header when no keys are configured or when it holds one of them."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise Unauthorized unless ``authorization`` is ``Bearer <a configured key>``."""
        if not self._keys:
            return
        scheme, _, token = (authorization or "").partition(" ")
        presented = token.strip().encode()
        # Compare against every key so the time taken does not reveal which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise Unauthorized("missing or invalid API key (use 'Authorization: Bearer KEY')")

    def check_all(self, values: Sequence[str]) -> None:
        """``check`` for every Authorization value one request carried. More than one is
        refused: which of them counts would be a guess, and the layers that read the header
        (ASGI middleware, FastAPI, gRPC metadata) would each guess differently."""
        if not self._keys:
            return
        if len(values) > 1:
            raise Unauthorized("more than one Authorization header; send one bearer key")
        self.check(values[0] if values else None)
