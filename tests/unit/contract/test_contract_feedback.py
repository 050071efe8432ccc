"""Feedback ids: minted by any gateway replica, verified by any other, refused with a reason when forged."""

from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.contract.feedback import (
    MAC_BYTES,
    MAX_ROWS,
    FeedbackKeys,
    Token,
    TokenError,
    labels_problem,
    mint,
    verify,
)

KEYS = FeedbackKeys({1: b"k" * 32})
NOW = 1_796_400_000
WEEK = 7 * 86400.0


def token(**changes: object) -> Token:
    base = {"track": "candidate", "revision": "27d8bf81b807fff7", "issued": NOW, "nonce": 42, "replica": 0x0A000105,
            "predictions": ("1",), "classes": True}  # fmt: skip
    return Token(**{**base, **changes})  # type: ignore[arg-type]


@given(
    track=st.sampled_from(["stable", "candidate"]),
    labels=st.lists(st.text(max_size=12), max_size=MAX_ROWS),
    nonce=st.integers(0, 2**64 - 1),
    truncated=st.booleans(),
)
def test_class_labels_round_trip(track: str, labels: list[str], nonce: int, truncated: bool) -> None:
    sent = token(track=track, predictions=tuple(labels), nonce=nonce, truncated=truncated)
    got = verify(KEYS, mint(KEYS, sent), NOW + 60, WEEK)
    assert got == sent.__class__(**{**sent.__dict__, "key_id": 1})


def test_regression_values_round_trip_as_float32() -> None:
    got = verify(KEYS, mint(KEYS, token(predictions=(1.5, -2.25), classes=False)), NOW, WEEK)
    assert got.predictions == (1.5, -2.25) and not got.classes


@given(key=st.binary(min_size=1, max_size=200), payload=st.binary(max_size=300))
def test_the_mac_is_hmac_sha256_of_the_key(key: bytes, payload: bytes) -> None:
    """The inner and outer states computed once give RFC 2104's HMAC, for keys shorter and longer than a
    block (tokens minted before and after this shortcut verify alike)."""
    assert FeedbackKeys({5: key}).mac(5, payload) == hmac.digest(key, payload, "sha256")[:MAC_BYTES]


def test_a_rotation_keeps_tokens_in_flight_valid() -> None:
    old = mint(KEYS, token())
    rotated = FeedbackKeys({1: b"k" * 32, 2: b"n" * 32})
    assert verify(rotated, old, NOW, WEEK).key_id == 1
    new = mint(rotated, token())
    assert verify(rotated, new, NOW, WEEK).key_id == 2
    with pytest.raises(TokenError) as refused:
        verify(KEYS, new, NOW, WEEK)  # a replica that has not seen the new key yet
    assert refused.value.reason == "unknown_key"


def _flip(text: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[index] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed"),
        ("x" * 30, "malformed"),
        ("not base64 !" * 3, "malformed"),
        (mint(KEYS, token())[:-8], "forged"),  # truncated: what is left does not verify
        (_flip(mint(KEYS, token()), 20), "forged"),  # a changed nonce
        (_flip(mint(KEYS, token()), -1), "forged"),  # a changed mac
        (mint(FeedbackKeys({1: b"x" * 32}), token()), "forged"),  # another ModelDeployment's key, same id
        (mint(FeedbackKeys({9: b"k" * 32}), token()), "unknown_key"),
        (mint(KEYS, token(issued=NOW - 8 * 86400)), "expired"),
        (mint(KEYS, token(issued=NOW + 3600)), "expired"),  # from the future
    ],
)
def test_untrusted_tokens_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(TokenError) as refused:
        verify(KEYS, text, NOW, WEEK)
    assert refused.value.reason == reason
    assert str(refused.value) and "k" * 8 not in str(refused.value)  # never the key


@given(st.text(max_size=200))
def test_any_text_is_refused_or_verified_never_raises_otherwise(text: str) -> None:
    try:
        verify(KEYS, text, NOW, WEEK)
    except TokenError as exc:
        assert exc.reason in ("malformed", "unknown_key", "forged", "expired")


def test_labels_must_match_the_rows_and_their_kind() -> None:
    classes = token(predictions=("0", "2"))
    assert labels_problem(classes, ["0", 2]) is None
    assert labels_problem(classes, ["0"]) == "1 labels for 2 labelled rows"
    assert labels_problem(classes, [0.5, True]) == "class labels must be strings or integers"
    values = token(predictions=(1.0,), classes=False)
    assert labels_problem(values, [2]) is None
    assert labels_problem(values, ["2"]) == "regression labels must be numbers"
