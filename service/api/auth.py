"""API-key checks shared by the doors: ``Authorization: Bearer KEY``, constant-time compare."""

from __future__ import annotations

import hmac

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
