"""KeyChecker: exact, case-sensitive keys compared in constant time against every key."""

from __future__ import annotations

import hmac

import pytest

from service.api import auth
from service.api.auth import KeyChecker
from service.errors import Unauthorized

KEYS = ["first-Key", "second-Key", "third-Key"]


@pytest.mark.parametrize("presented", ["first-Key", "second-Key", "third-Key", "wrong", ""])
def test_every_key_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    """The time taken must not tell which key matched, or how far a guess got: every
    configured key goes through ``hmac.compare_digest``, whatever matched first."""
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    checker = KeyChecker(KEYS)
    if presented in KEYS:
        checker.check(f"Bearer {presented}")
    else:
        with pytest.raises(Unauthorized):
            checker.check(f"Bearer {presented}")
    assert compared == [key.encode() for key in KEYS]


@pytest.mark.parametrize(
    "header",
    [None, "", "first-Key", "Basic first-Key", "Bearer FIRST-KEY", "Bearer first-Ke",
     "Bearer first-Keyy", "Bearer  ", "Bearer first-Key second-Key"],
)  # fmt: skip
def test_only_a_bearer_header_with_an_exact_key_passes(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        KeyChecker(KEYS).check(header)


def test_no_keys_means_open() -> None:
    KeyChecker([]).check(None)
    assert not KeyChecker([]).enabled


@pytest.mark.parametrize(
    "values",
    [["Bearer first-Key", "Bearer wrong"], ["Bearer wrong", "Bearer first-Key"],
     ["Bearer first-Key", "Bearer first-Key"], []],
)  # fmt: skip
def test_a_request_passes_with_exactly_one_right_header(values: list[str]) -> None:
    with pytest.raises(Unauthorized):
        KeyChecker(KEYS).check_all(values)
    KeyChecker(KEYS).check_all(["Bearer second-Key"])
    KeyChecker([]).check_all(values)  # no keys: open, whatever was sent
