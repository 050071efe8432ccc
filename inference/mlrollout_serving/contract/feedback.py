"""Feedback ids: the signed token a gateway hands out with every answer, and takes back with a label.

Stateless across gateway replicas and restarts: the token itself says which track and revision answered,
when, which request it was (a nonce), which replica minted it, and what was predicted for each row, under
an HMAC-SHA256 signature with a per-ModelDeployment key. Any replica holding the key verifies it and scores
a label against the prediction in it; nothing else has to be remembered to count a label.

Layout (little-endian), then base64url without padding::

    version u8 | key id u8 | flags u8 | track u8 | issued u32 (unix s) | nonce u64 | replica u32 (IPv4)
    | revision (u8 length, ASCII) | rows u16 | classes u8 | predictions | mac (16 bytes: HMAC-SHA256 truncated)

Predictions are either class labels (``flags & CLASSES``; each a u8 length and UTF-8, at most
MAX_LABEL_BYTES: a row whose label is longer is not carried, :func:`carried_rows`) or float32 values
(regressors); ``classes`` is the number of classes when the answer showed it (its probabilities' width; 0
when unknown), so a label outside them is refused. ``flags & TRUNCATED``: the answer had more rows than a
token carries (or a label too long from some row on); only the first ``rows`` rows can be labelled. ``flags &
MIRRORED``: a copy of the request went to the shadow, whose answer the minting replica keeps for pairing.
``flags & FAILED``: the track named failed the request (a fallback answered the client) and every row is
without a prediction.

**A row without a prediction** (the one definition; docs/gateway.md, "Feedback"): the track named answered
that row with nothing usable, so a label for it counts *against* that track — a wrong answer (classifiers),
an error of the clip bound at every bound (regressors) — never leaving it out, which would score a model
that fails on hard rows only on the rows it answered. On the wire it is the length byte NO_PREDICTION
(classifiers) or a NaN or ±Inf float32 (regressors: the model answered NaN or ±Inf, or nothing); verified,
``None`` or that float (:func:`answered` tells). The keys live in a Secret the operator creates
(docs/gateway.md, "Feedback"); never in status, never in a log line.

**A label counts in the step that served its answer** (:func:`counts_in_step`; docs/analysis.md, "Labels
and step boundaries"): each step's analysis reads the label counters from the step's start, so a label for
an answer served before it (under the previous step's traffic split, arriving late) is accepted and not
scored, counted under :data:`SERVED_BEFORE_STEP` instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

__all__ = [
    "FLOAT32_MAX",
    "MAC_BYTES",
    "MAX_LABEL_BYTES",
    "MAX_ROWS",
    "NO_PREDICTION",
    "SERVED_BEFORE_STEP",
    "FeedbackKeys",
    "Token",
    "TokenError",
    "answered",
    "carried_rows",
    "counts_in_step",
    "labels_problem",
    "mint",
    "seal",
    "seal_section",
    "section",
    "sign",
    "unpack_predictions",
    "verify",
]

VERSION: Final = 1
MAC_BYTES: Final = 16
MAX_ROWS: Final = 256
"""The most rows one token may carry (a gateway's own bound may be lower)."""

TRUNCATED: Final = 1
CLASSES: Final = 2
MIRRORED: Final = 4
FAILED: Final = 8
NO_PREDICTION: Final = 255
"""The length byte of a class-label row without a prediction (no label bytes follow)."""
MAX_LABEL_BYTES: Final = NO_PREDICTION - 1
"""The longest class label a token carries, in UTF-8 bytes (NO_PREDICTION is not a length). A longer one is
never cut: a label is scored by equality with the prediction, so a cut prediction would score the right
label as wrong (and a cut inside a character would not verify); the rows from it on are not carried
(:func:`carried_rows`), as rows beyond a token's bound are not."""
_SHORT_LABEL: Final = MAX_LABEL_BYTES // 4  # a label of this many characters or fewer fits (UTF-8: 4 bytes at most)
TRACKS: Final[tuple[str, ...]] = ("stable", "candidate")
_HEAD = struct.Struct("<BBBBIQI")
_ROWS = struct.Struct("<HB")
_ONE_LABEL = struct.Struct("<HBB")  # rows (1), class count, the one label's length: the common one-row answer
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_NONE: Final = bytes((NO_PREDICTION,))
_BLOCK: Final = 64  # SHA-256's block size (RFC 2104's B)

Track = Literal["stable", "candidate"]


class _Sha256(Protocol):
    """A SHA-256 state (hashlib's or CPython's own): what the HMAC needs of it."""

    def copy(self) -> _Sha256: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _state_constructor() -> Callable[[bytes], _Sha256]:
    """CPython's own SHA-256 (``_sha2`` from 3.12, ``_sha256`` before), else hashlib's (OpenSSL's): the same
    bytes; the built-in copies a state and finishes a digest with a few small C calls where OpenSSL 3 goes
    through its EVP layer (a context allocated per copy and per digest). In a loop the two cost the same; with
    cold caches, as at c=1 where every answer meets them cold, the built-in's path is shorter
    (docs/gateway.md, "What feedback costs"). A Python built without it (``--without-builtin-hashlib-hashes``)
    gets hashlib's."""
    for name in ("_sha2", "_sha256"):
        try:
            constructor: Callable[[bytes], _Sha256] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return constructor
    return hashlib.sha256


_SHA256_STATE: Final = _state_constructor()


class TokenError(ValueError):
    """A token that cannot be trusted; ``reason`` is the label of the refusal counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Token:
    """What a feedback id says, once verified."""

    track: Track
    revision: str
    issued: int
    nonce: int
    replica: int
    predictions: tuple[str | None, ...] | tuple[float, ...]
    """Per row; a row without a prediction is None (classes) or NaN or ±Inf (regressors): :func:`answered`."""
    classes: bool  # predictions are class labels (else regressor values)
    truncated: bool = False
    mirrored: bool = False
    failed: bool = False  # the track failed the request: no row has a prediction
    class_count: int = 0  # how many classes the model has, when its answer showed it (else 0)
    key_id: int = 0


@dataclass(frozen=True)
class FeedbackKeys:
    """The signing keys by id; tokens are minted with the highest id and verified with any of them, so a
    rotation (add a key with a higher id, later drop the old one) never refuses a token in flight."""

    keys: Mapping[int, bytes]
    _states: dict[int, tuple[_Sha256, _Sha256]] = field(init=False, repr=False, compare=False)
    _signing: tuple[int, _Sha256, _Sha256] = field(init=False, repr=False, compare=False)
    """The current key's id and states: what :func:`seal` reads once per token."""

    def __post_init__(self) -> None:
        states = {key_id: _hmac_states(key) for key_id, key in self.keys.items()}
        current = max(self.keys)
        object.__setattr__(self, "_states", states)
        object.__setattr__(self, "_signing", (current, *states[current]))

    @property
    def current(self) -> int:
        """The id of the key that signs (the highest); fixed when the keys are read, not looked for per token."""
        return self._signing[0]

    def mac(self, key_id: int, payload: bytes) -> bytes:
        """HMAC-SHA256 of ``payload`` with key ``key_id``, truncated to MAC_BYTES: the same bytes as
        ``hmac.digest(key, payload, "sha256")``, from the key's inner and outer hash states computed once (a
        copy of each per call costs a third of a fresh HMAC, and touches less code when the caches are cold:
        docs/gateway.md, "What feedback costs")."""
        inner, outer = self._states[key_id]
        digest = inner.copy()
        digest.update(payload)
        mac = outer.copy()
        mac.update(digest.digest())
        return mac.digest()[:MAC_BYTES]


def _hmac_states(key: bytes, state: Callable[[bytes], _Sha256] = _SHA256_STATE) -> tuple[_Sha256, _Sha256]:
    """SHA-256 states after the key XOR ipad and XOR opad blocks (RFC 2104); ``state``: whose SHA-256."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return state(bytes(b ^ 0x36 for b in key)), state(bytes(b ^ 0x5C for b in key))


def mint(keys: FeedbackKeys, token: Token) -> str:
    """The signed, encoded token (``token.key_id`` is ignored: the current key signs)."""
    flags = (TRUNCATED if token.truncated else 0) | (CLASSES if token.classes else 0)
    flags |= (MIRRORED if token.mirrored else 0) | (FAILED if token.failed else 0)
    revision = token.revision.encode("ascii")
    return sign(keys, flags, TRACKS.index(token.track), token.issued, token.nonce, token.replica,
                bytes((len(revision),)) + revision, token.predictions, token.class_count)  # fmt: skip


def sign(
    keys: FeedbackKeys,
    flags: int,
    track: int,
    issued: int,
    nonce: int,
    replica: int,
    revision: bytes,
    predictions: Sequence[str | None] | Sequence[float],
    class_count: int,
) -> str:
    """:func:`mint` without a :class:`Token`; ``revision`` is its encoded field (a length byte, then ASCII);
    ``flags`` and ``track`` as in the layout above. :func:`seal` gives the same token as ASCII bytes."""
    return seal(keys, flags, track, issued, nonce, replica, revision, predictions, class_count).decode("ascii")


def seal(
    keys: FeedbackKeys,
    flags: int,
    track: int,
    issued: int,
    nonce: int,
    replica: int,
    revision: bytes,
    predictions: Sequence[str | None] | Sequence[float],
    class_count: int,
) -> bytes:
    """:func:`sign`'s token as ASCII bytes: what a gateway calls once per answer it reads (the header and the
    body take bytes; a caller keeps ``revision``'s field per revision)."""
    return seal_section(keys, flags, track, issued, nonce, replica, revision,
                        section(flags, predictions, class_count))  # fmt: skip


def section(flags: int, predictions: Sequence[str | None] | Sequence[float], class_count: int) -> bytes:
    """The token's predictions field: ``rows u16 | classes u8 | predictions``, class labels when ``flags &
    CLASSES`` (else float32 values). The one packing of predictions: :func:`seal` uses it, and so does the
    model server's predictions header (contract.predicted). The common answer, one class label, is packed
    with one ``struct`` call. A class label over MAX_LABEL_BYTES raises ValueError: callers carry only
    :func:`carried_rows` rows."""
    if class_count > 255 or class_count < 0:
        class_count = min(max(class_count, 0), 255)
    if not flags & CLASSES:
        rows = len(predictions)
        return _ROWS.pack(rows, class_count) + struct.pack(f"<{rows}f", *predictions)
    if len(predictions) == 1 and (label := predictions[0]) is not None:
        raw = (label if type(label) is str else str(label)).encode()
        if len(raw) > MAX_LABEL_BYTES:
            raise ValueError(_TOO_LONG)
        return _ONE_LABEL.pack(1, class_count, len(raw)) + raw
    parts = [_ROWS.pack(len(predictions), class_count)]
    for label in predictions:
        if label is None:
            parts.append(_NONE)
            continue
        raw = str(label).encode()
        if len(raw) > MAX_LABEL_BYTES:
            raise ValueError(_TOO_LONG)
        parts += (bytes((len(raw),)), raw)
    return b"".join(parts)


_TOO_LONG: Final = f"a class label over {MAX_LABEL_BYTES} UTF-8 bytes cannot be carried (carried_rows)"


def carried_rows(classes: bool, predictions: Sequence[object]) -> int:
    """How many of the leading rows a token can carry: all of them, except that a class label over
    MAX_LABEL_BYTES ends them (that row and the ones after it are left out, and the token is marked
    ``TRUNCATED``, as for rows beyond the bound). Rows without a prediction (None) are always carried."""
    if not classes:
        return len(predictions)
    for row, label in enumerate(predictions):
        if label is None:
            continue
        text = label if type(label) is str else str(label)
        if len(text) > _SHORT_LABEL and len(text.encode()) > MAX_LABEL_BYTES:
            return row
    return len(predictions)


def seal_section(
    keys: FeedbackKeys, flags: int, track: int, issued: int, nonce: int, replica: int, revision: bytes, packed: bytes
) -> bytes:
    """:func:`seal` with the predictions field already packed (:func:`section`; or as the model server sent it,
    contract.predicted): the HMAC and the base64url, and nothing else."""
    key_id, inner, outer = keys._signing
    payload = _HEAD.pack(VERSION, key_id, flags, track, issued, nonce, replica) + revision + packed
    digest = inner.copy()  # FeedbackKeys.mac inlined: this runs once per answer
    digest.update(payload)
    mac = outer.copy()
    mac.update(digest.digest())
    signed = binascii.b2a_base64(payload + mac.digest()[:MAC_BYTES], newline=False)
    return signed.translate(_URLSAFE).rstrip(b"=")  # base64url, as urlsafe_b64encode


def verify(keys: FeedbackKeys, text: str, now: int, max_age: float) -> Token:
    """The token's claims; raises :class:`TokenError` (reasons ``malformed``, ``unknown_key``, ``forged``,
    ``expired``) for anything that is not a token this ModelDeployment's gateway minted within
    ``max_age`` seconds."""
    if not isinstance(text, str) or not 24 <= len(text) <= 8192:
        raise TokenError("malformed", "feedback_id is not a feedback id")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "feedback_id is not base64url") from None
    if len(raw) < _HEAD.size + 1 + _ROWS.size + MAC_BYTES:
        raise TokenError("malformed", "feedback_id is truncated")
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    version, key_id, flags, track, issued, nonce, replica = _HEAD.unpack_from(payload)
    if version != VERSION:
        raise TokenError("malformed", f"feedback_id version {version} is not supported")
    key = keys.keys.get(key_id)
    if key is None:
        raise TokenError("unknown_key", "feedback_id was signed with a key this gateway does not hold")
    if not hmac.compare_digest(keys.mac(key_id, payload), mac):
        raise TokenError("forged", "feedback_id signature does not match")
    if now - issued > max_age or issued - now > 300:
        raise TokenError("expired", f"feedback_id is older than {max_age:g}s")
    try:
        return _claims(payload, key_id, flags, track, issued, nonce, replica)
    except (struct.error, IndexError, UnicodeDecodeError):  # signed by us, so only a bug gets here
        raise TokenError("malformed", "feedback_id payload is inconsistent") from None


def unpack_predictions(
    classes: bool, rows: int, data: bytes, at: int
) -> tuple[tuple[str | None, ...] | tuple[float, ...], int]:
    """``rows`` predictions packed by :func:`section` in ``data`` from ``at`` (after its rows and classes
    head), and where they end: class labels (None for a row without a prediction) or float32 values as
    Python floats. The one unpacking: a verified token's, and the model server's predictions header's for
    a shadow's answer (contract.predicted). Raises IndexError, struct.error or UnicodeDecodeError when the
    bytes are not such predictions."""
    if not classes:
        return struct.unpack_from(f"<{rows}f", data, at), at + 4 * rows
    labels: list[str | None] = []
    for _ in range(rows):
        size = data[at]
        if size == NO_PREDICTION:
            labels.append(None)
            at += 1
            continue
        labels.append(data[at + 1 : at + 1 + size].decode())
        at += 1 + size
    return tuple(labels), at


def _claims(payload: bytes, key_id: int, flags: int, track: int, issued: int, nonce: int, replica: int) -> Token:
    at = _HEAD.size
    length = payload[at]
    revision = payload[at + 1 : at + 1 + length].decode("ascii")
    at += 1 + length
    rows, class_count = _ROWS.unpack_from(payload, at)
    predictions, at = unpack_predictions(bool(flags & CLASSES), rows, payload, at + _ROWS.size)
    if at != len(payload):
        raise IndexError("trailing bytes")
    return Token(
        track=TRACKS[track],  # type: ignore[arg-type]
        revision=revision,
        issued=issued,
        nonce=nonce,
        replica=replica,
        predictions=predictions,
        classes=bool(flags & CLASSES),
        truncated=bool(flags & TRUNCATED),
        mirrored=bool(flags & MIRRORED),
        failed=bool(flags & FAILED),
        class_count=class_count,
        key_id=key_id,
    )


SERVED_BEFORE_STEP: Final = "served_before_step"
"""Why a labelled row was accepted and not scored: its answer was served before the current step started."""


def counts_in_step(issued: int, step_started_at: float | None) -> bool:
    """Whether a label for an answer whose token was issued at ``issued`` is scored in the step that started at
    ``step_started_at`` (unix seconds; None: no step runs, every label counts, as before steps were known).

    A token's issue time is whole seconds, truncated: its answer was served within ``[issued, issued + 1)``.
    It counts when that whole second is at or after the step start (``issued >= step_started_at``), so no
    answer served before the step is ever scored in it. A token of the same second as the start falls on the
    *previous* step's side unless the step started exactly on the second: at most one second of the step's
    own answers is given up, never one of the previous step's taken."""
    return step_started_at is None or issued >= step_started_at


FLOAT32_MAX: Final = 3.4028234663852886e38
"""The largest finite float32: regression predictions are carried as float32, and a label within this range
keeps every absolute and squared error finite, so one label can never turn the running sums into Inf."""


def answered(prediction: str | float | None) -> bool:
    """Whether a token's row has a prediction of the track's (see "A row without a prediction" above)."""
    return prediction is not None and (isinstance(prediction, str) or math.isfinite(prediction))


def labels_problem(token: Token, labels: Sequence[object]) -> str | None:
    """Why ``labels`` cannot be scored against the token's predictions, or None."""
    if len(labels) != len(token.predictions):
        return f"{len(labels)} labels for {len(token.predictions)} labelled rows"
    for row, label in enumerate(labels):
        if token.classes:
            if isinstance(label, bool) or not isinstance(label, str | int):
                return "class labels must be strings or integers"
            if token.class_count and str(label) not in {str(c) for c in range(token.class_count)}:
                return f"unknown class {str(label)[:40]!r}; the model predicts classes 0 to {token.class_count - 1}"
        elif isinstance(label, bool) or not isinstance(label, int | float):
            return "regression labels must be numbers"
        elif not -FLOAT32_MAX <= label <= FLOAT32_MAX:  # NaN fails both comparisons
            return (
                f"regression label of row {row} ({str(label)[:40]}) is not a finite number within float32 range "
                f"(|label| <= {FLOAT32_MAX:.7g}, the range predictions are carried in)"
            )
    return None
