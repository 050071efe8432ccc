"""The faster minting path (issue #14, "What feedback costs") changes no byte of a token: ids issued before the
change verify after it, and the signing key's states cached at load give HMAC-SHA256 of the current key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import math
import sys

from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.contract.feedback import (
    _SHA256_STATE,
    CLASSES,
    MAC_BYTES,
    MAX_ROWS,
    FeedbackKeys,
    Token,
    _hmac_states,
    mint,
    seal,
    sign,
    verify,
)

KEYS = FeedbackKeys({1: b"k" * 32, 7: bytes(range(40))})
NOW = 1_796_400_000


def _token(**changes: object) -> Token:
    base = {"track": "candidate", "revision": "27d8bf81b807fff7", "issued": NOW, "nonce": 0x0123456789ABCDEF,
            "replica": 0x0A000105, "predictions": ("1",), "classes": True, "class_count": 3}  # fmt: skip
    return Token(**{**base, **changes})  # type: ignore[arg-type]


# Minted by the code before the minting path was rewritten (commit 81ec4e8), with KEYS: the wire format.
GOLDEN = {
    "one_label": (_token(), "AQcCAYDjEmvvzauJZ0UjAQUBAAoQMjdkOGJmODFiODA3ZmZmNwEAAwExsNGE-aF5yrmzmo5dA8B1YA"),
    "labels_with_none": (
        # minted from "x" * 300, then cut to 254 bytes; a label over 254 bytes is now never carried (refused)
        _token(track="stable", predictions=("0", None, "2", "x" * 254), truncated=True, mirrored=True),
        "AQcHAIDjEmvvzauJZ0UjAQUBAAoQMjdkOGJmODFiODA3ZmZmNwQAAwEw_wEy_nh4" + "eHh4" * 84 + "EPeeCwdq1hbYRikWf3IQCw",
    ),
    "regressor": (
        _token(predictions=(1.5, -2.25, math.inf), classes=False, class_count=0),
        "AQcAAYDjEmvvzauJZ0UjAQUBAAoQMjdkOGJmODFiODA3ZmZmNwMAAAAAwD8AABDAAACAfwkbD3-F2lMPqrAjsM0l-vU",
    ),
    "failed": (
        _token(predictions=(None, None), failed=True),
        "AQcKAYDjEmvvzauJZ0UjAQUBAAoQMjdkOGJmODFiODA3ZmZmNwIAA___jZiwvMeknZg1eEsNh2vx1Q",
    ),
}


def test_tokens_are_byte_for_byte_those_of_the_code_before() -> None:
    for name, (token, before) in GOLDEN.items():
        assert mint(KEYS, token) == before, name
        got = verify(KEYS, before, NOW, 60)  # an id issued before the upgrade verifies after it
        assert (got.predictions[:3], got.key_id) == (token.predictions[:3], 7), name


def _payload(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@given(
    keys=st.dictionaries(st.integers(0, 255), st.binary(min_size=16, max_size=100), min_size=1, max_size=4),
    labels=st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=1, max_size=MAX_ROWS),
    nonce=st.integers(0, 2**64 - 1),
    class_count=st.integers(-5, 300),
)
def test_seal_is_hmac_sha256_of_the_highest_key_and_sign_its_text(
    keys: dict[int, bytes], labels: list[str | None], nonce: int, class_count: int
) -> None:
    """The cached states of the current key give the MAC ``hmac.new`` gives, for random keys (shorter and
    longer than SHA-256's block), ids and rows; :func:`sign` is the same token as text."""
    ring = FeedbackKeys(keys)
    sealed = seal(ring, CLASSES, 1, NOW, nonce, 7, b"\x02r1", labels, class_count)
    raw = _payload(sealed.decode("ascii"))
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    current = max(keys)
    assert ring.current == current and payload[1] == current
    assert mac == hmac.new(keys[current], payload, "sha256").digest()[:MAC_BYTES]
    assert sign(ring, CLASSES, 1, NOW, nonce, 7, b"\x02r1", labels, class_count) == sealed.decode("ascii")
    assert verify(ring, sealed.decode("ascii"), NOW, 60).nonce == nonce


def test_a_rotation_signs_with_the_new_key_and_still_verifies_the_old() -> None:
    old_ring = FeedbackKeys({1: b"k" * 32})
    old = seal(old_ring, CLASSES, 0, NOW, 1, 0, b"\x00", ["0"], 2).decode("ascii")
    rotated = FeedbackKeys({1: b"k" * 32, 2: b"n" * 32})
    new = seal(rotated, CLASSES, 0, NOW, 2, 0, b"\x00", ["0"], 2).decode("ascii")
    assert (verify(rotated, old, NOW, 60).key_id, verify(rotated, new, NOW, 60).key_id) == (1, 2)
    assert _payload(new)[-MAC_BYTES:] == hmac.new(b"n" * 32, _payload(new)[:-MAC_BYTES], "sha256").digest()[:16]


def test_the_states_are_cpython_s_own_sha256_on_this_python() -> None:
    """The HMAC states come from CPython's built-in SHA-256 (shorter with cold caches than OpenSSL's, "What
    feedback costs"), which every CPython this project supports has (``_sha256``; ``_sha2`` from 3.12)."""
    builtin = importlib.import_module("_sha2" if sys.version_info >= (3, 12) else "_sha256").sha256
    assert _SHA256_STATE is builtin
    assert type(KEYS._signing[1]) is type(builtin(b""))


@given(key=st.binary(min_size=1, max_size=200), payload=st.binary(max_size=600))
def test_either_sha256_gives_the_same_hmac(key: bytes, payload: bytes) -> None:
    """CPython's SHA-256 states and hashlib's (OpenSSL's, the fallback) give HMAC-SHA256 byte for byte, for
    keys shorter and longer than the block and payloads over several blocks."""
    expected = hmac.new(key, payload, "sha256").digest()
    for state in (_SHA256_STATE, hashlib.sha256):
        inner, outer = (s.copy() for s in _hmac_states(key, state))
        inner.update(payload)
        outer.update(inner.digest())
        assert outer.digest() == expected, state
