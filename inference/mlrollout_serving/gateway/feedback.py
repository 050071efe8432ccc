"""Feedback ids on answers, and labels scored against them (docs/gateway.md, "Feedback").

Every answer a track gives gets a signed token (``contract.feedback``) carrying what was predicted per row;
a label that comes back with it is scored against that prediction by whichever replica receives it, so no
replica has to remember an answer. The one thing a token cannot carry is the shadow's answer to a mirrored
request, which arrives after the client's: the replica that minted the token keeps it briefly
(:class:`PendingAnswers`, bounded by age and bytes) so that a label scores both models on the same request.

Pure pieces here; the proxy calls them on its request path and on ``POST /v2/models/<m>/feedback``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import struct
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final

import orjson

from ..contract.feedback import (
    CLASSES,
    FAILED,
    MAX_ROWS,
    MIRRORED,
    SERVED_BEFORE_STEP,
    TRACKS,
    TRUNCATED,
    FeedbackKeys,
    Token,
    TokenError,
    answered,
    carried_rows,
    counts_in_step,
    labels_problem,
    seal,
    seal_section,
    verify,
)
from ..contract.metrics import ABS_ERROR_BUCKETS, CLIP_BOUNDS
from ..contract.predicted import Predicted, Section, read_answer, read_header, read_predicted

__all__ = [
    "Minted",
    "Minter",
    "PendingAnswers",
    "Predicted",
    "ReplayCache",
    "Scores",
    "check",
    "inject",
    "load_keys",
    "predictions_of",
    "shadow_predictions",
]

log = logging.getLogger("mlrollout.gateway.feedback")

# The regressor error histogram's bounds, always ending in +Inf whatever the contract's tuple ends with.
_ABS_ERROR_BOUNDS: Final = (*(b for b in ABS_ERROR_BUCKETS if b != math.inf), math.inf)
NON_FINITE: Final = "non_finite_prediction"
"""Why a labelled regressor row has no prediction: the model answered NaN or ±Inf for it."""
NO_PREDICTION: Final = "no_prediction"
"""Why a labelled classifier row has no prediction: the model's answer had no usable class for it."""
REQUEST_FAILED: Final = "request_failed"
"""Why no row of a request has a prediction: the track failed it (an error or a timeout; a fallback answered
the client, or the shadow's copy was not answered with a readable 200)."""


def load_keys(path: str) -> FeedbackKeys | None:
    """The keys in the mounted Secret file (``{"<id>": "<base64 of 32 bytes>", ...}``), or None when there is
    no usable file (feedback is then off: no ids, and feedback is refused as ``disabled``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
        keys = {int(k): base64.b64decode(v, validate=True) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("feedback keys at %s not usable (%s): feedback ids are off", path, type(exc).__name__)
        return None
    keys = {k: v for k, v in keys.items() if 0 <= k <= 255 and len(v) >= 16}
    return FeedbackKeys(keys) if keys else None


def predictions_of(body: bytes) -> Predicted | None:
    """What an OIP answer predicted per row; None when the body is not an answer we can read (it then
    carries no feedback id). See :func:`contract.predicted.read_answer`."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return read_answer(parsed) if type(parsed) is dict else None


def shadow_predictions(body: bytes, predicted: bytes | None = None) -> tuple[Any, ...] | None:
    """What a shadow's answer predicted per row, as :class:`PendingAnswers` keeps it for pairing; None when the
    answer shows no prediction (it is then kept as the shadow having failed the request). From the upstream's
    predictions header when it sent one that parses (our model server: the answer is not read), else from
    the answer read (:func:`predictions_of`); the same rows either way
    (tests/unit/gateway/test_gateway_feedback_shadow_header.py). A regressor's values are float32, as the
    header and the client answer's token carry them, so that a pair compares like with like (until 6 Dec
    the shadow's were the answer's float64 values: two identical regressors then never tied on a row)."""
    if predicted is not None and (sent := read_predicted(predicted)) is not None:
        return tuple(sent.values)
    read = predictions_of(body)
    if read is None:
        return None
    if read.classes:
        return tuple(read.values)
    rows = len(read.values)  # NaN or ±Inf where the answer had null or a value beyond float32: packable
    return struct.unpack(f"<{rows}f", struct.pack(f"<{rows}f", *read.values))


def without_predictions(predicted: Predicted) -> Predicted:
    """The same rows with no prediction in any: what a track that failed the request is scored on."""
    return Predicted(predicted.classes, [None if predicted.classes else math.nan] * len(predicted.values),
                     predicted.class_count)  # fmt: skip


@dataclass(slots=True)
class Minted:
    """A minted id: ``id`` is the token as ASCII bytes (the header and the body take bytes), ``token`` as text."""

    id: bytes
    nonce: int
    rows: int  # rows the token carries (a label for each is expected)
    truncated: bool

    @property
    def token(self) -> str:
        return self.id.decode("ascii")


_TRACK_IDS: Final = {name: i for i, name in enumerate(TRACKS)}
_UNSEEN: Final = object()


class Minter:
    """Mints the ids of one gateway replica: its nonces count up from a random start, its address is in the
    token so that a label for a mirrored request can be sent to the replica holding the shadow's answer."""

    def __init__(self, keys: FeedbackKeys, replica: int, max_rows: int = 64) -> None:
        self.keys = keys
        self.replica = replica
        self.max_rows = max(1, min(max_rows, MAX_ROWS))
        # unique, not secret: an id fails its MAC whatever nonce it names (docs/gateway.md, "What the id is")
        self._nonces = count(int.from_bytes(os.urandom(7), "little") << 8)
        self._revisions: dict[str, bytes] = {}  # a revision's encoded token field, made once
        self._sections: dict[bytes, Section | None] = {}  # predictions headers seen, read once each

    def mint(
        self, track: str, revision: str, predicted: Predicted, now: int, mirrored: bool = False, failed: bool = False
    ) -> Minted:
        """The id of an answer whose predictions were read (:func:`predictions_of`); raises ValueError when no
        row can be carried (:meth:`mint_carried` says None)."""
        minted = self.mint_carried(track, revision, predicted, now, mirrored, failed)
        if minted is None:
            raise ValueError("no row of this answer can be carried: its first class label is too long")
        return minted

    def mint_carried(
        self, track: str, revision: str, predicted: Predicted, now: int, mirrored: bool = False, failed: bool = False
    ) -> Minted | None:
        """:meth:`mint`, or None when the answer has rows and not one can be carried (its first class label is
        over MAX_LABEL_BYTES): an id that no label could ever be counted for is not minted at all (the answer
        says ``feedback_rows: 0`` instead, :func:`inject`)."""
        values = predicted.values
        carried = values[: self.max_rows] if len(values) > self.max_rows else values
        if predicted.classes and (fits := carried_rows(True, carried)) < len(carried):
            if not fits:
                return None
            carried = carried[:fits]  # a label too long to carry: that row on cannot be labelled
        truncated = len(values) > len(carried)
        flags = (CLASSES if predicted.classes else 0) | (TRUNCATED if truncated else 0) | (MIRRORED if mirrored else 0)
        flags |= FAILED if failed else 0
        nonce = next(self._nonces)
        token = seal(self.keys, flags, _TRACK_IDS[track], now, nonce, self.replica, self._revision(revision),
                     carried, predicted.class_count)  # fmt: skip
        return Minted(token, nonce, len(carried), truncated)

    def mint_section(self, track: str, revision: str, section: Section, now: int, mirrored: bool = False) -> Minted:
        """The id of an answer whose predictions came packed in the upstream's header (contract.predicted):
        the same token as :meth:`mint` of the answer read, without reading it."""
        flags = section.flags | (TRUNCATED if section.truncated else 0) | (MIRRORED if mirrored else 0)
        nonce = next(self._nonces)
        token = seal_section(self.keys, flags, _TRACK_IDS[track], now, nonce, self.replica, self._revision(revision),
                             section.packed)  # fmt: skip
        return Minted(token, nonce, section.rows, section.truncated)

    def section(self, value: bytes) -> Section | None:
        """A predictions header's value read (contract.predicted.read_header), remembered: a classifier's
        one-row answers have one value per class, so most answers are read once per class, not once each
        (the first 1,024 values of at most 64 bytes: a few rows' worth, so the memory stays under 100 KiB; a
        regressor's values rarely repeat, and longer ones are read each time)."""
        section = self._sections.get(value, _UNSEEN)
        if section is _UNSEEN:
            section = read_header(value, self.max_rows)
            if len(value) <= 64 and len(self._sections) < 1024:
                self._sections[value] = section
        return section  # type: ignore[return-value]

    def _revision(self, revision: str) -> bytes:
        """The revision's encoded token field (a length byte, then ASCII), made once per revision."""
        encoded = self._revisions.get(revision)
        if encoded is None:
            raw = revision.encode("ascii")
            encoded = bytes((len(raw),)) + raw
            if len(self._revisions) < 64:  # a gateway serves two or three revisions at a time
                self._revisions[revision] = encoded
        return encoded


def inject(body: bytes, minted: Minted | None, answer: object = None) -> bytes | None:
    """The answer with ``parameters.feedback_id`` (and ``feedback_rows`` when not every row can be labelled);
    None when ``body`` is not a JSON object (it then carries no id). ``minted`` None: the answer has rows and
    none can be labelled (its first class label is too long to carry, :meth:`Minter.mint_carried`), so it
    gets ``feedback_rows: 0`` and no id. ``answer``: ``body`` parsed, if the caller has it.

    The common answer, a non-empty object without a top-level ``parameters``, gets the member spliced in
    before its closing brace: a JSON object's text ends with ``}`` and then only JSON whitespace (orjson
    parsed it, and takes no other), so the result is that object with one more member, every other byte the
    upstream's (and the answer to this request only). An answer with ``parameters`` is parsed and encoded
    again (the ids merged into them; a ``parameters`` that is not an object is replaced)."""
    if answer is None:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    if type(answer) is not dict:
        return None
    if answer and "parameters" not in answer:
        return _splice(body, minted)
    params = answer.get("parameters")
    params = dict(params) if type(params) is dict else {}
    if minted is None:  # the gateway's member names: an upstream's own feedback_id is never passed as ours
        params.pop("feedback_id", None)
        params["feedback_rows"] = 0
    else:
        params["feedback_id"] = minted.token
        if minted.truncated:
            params["feedback_rows"] = minted.rows
        else:  # the gateway's name too: an upstream's own count would tell the client a wrong number of rows
            params.pop("feedback_rows", None)
    try:
        return orjson.dumps({**answer, "parameters": params})
    except orjson.JSONEncodeError:  # nothing orjson parsed fails to encode; if it ever did: no id, not a 500
        return None


def _splice(body: bytes, minted: Minted | None) -> bytes:
    """``body``, a non-empty JSON object without a top-level ``parameters`` whose last ``}`` closes it, with the
    ids as one more member (:func:`inject`'s common case; the one place the member is written)."""
    end = body.rindex(b"}")
    if minted is None:
        return b'%s,"parameters":{"feedback_rows":0}}' % body[:end]
    token = minted.id  # base64url: nothing in it needs escaping in a JSON string
    if minted.truncated:
        return b'%s,"parameters":{"feedback_id":"%s","feedback_rows":%d}}' % (body[:end], token, minted.rows)
    return b"".join((body[:end], b',"parameters":{"feedback_id":"', token, b'"}}'))


_NOT_BEFORE_BRACE: Final = frozenset(b" \t\r\n{")
_PARAMETERS: Final = b'"parameters"'
_BACKSLASH: Final = 0x5C


def _plain(body: bytes) -> bool:
    """Whether an answer that was not read can take :func:`_splice` as it is, judged from its bytes alone: it
    starts with ``{`` and ends with ``}`` right after something other than ``{`` or JSON whitespace (``{}`` has
    no member for the id to follow; whitespace there is only ever a foreign upstream's, whose answer is then
    read), and has no ``"parameters"`` anywhere and no escape (so no top-level ``parameters`` however its
    name is spelled). Asked of every answer whose upstream sent the predictions header, whatever the
    header's :data:`~..contract.predicted.PLAIN` flag says (an upstream's word is not trusted with the
    client's answer); anything else is read (:func:`inject`).

    Sound without parsing: a JSON text that starts with ``{`` is an object, and one ending with ``}`` ends
    with the brace that closes it; so a valid body passing this stays valid, with the same members and one
    more. A body that is not JSON stays not JSON: the body's last ``}`` becomes ``,"parameters":{...}}``,
    which parses only where a member may follow at the top level of one object, the place that ``}`` closed
    it, so only a text that was one object already comes out parsing
    (tests/unit/gateway/test_gateway_feedback_lying_header.py). The cost is two scans of the body (0.3 µs
    CPU on the 190-byte wine answer under load; docs/gateway.md, "What feedback costs")."""
    return (  # cheapest first; ``int in bytes`` is a memchr, and ``find`` beats ``bytes in bytes`` (3.11)
        body[-1:] == b"}"
        and body[:1] == b"{"
        and body[-2] not in _NOT_BEFORE_BRACE
        and _BACKSLASH not in body
        and body.find(_PARAMETERS) < 0
    )


def _stamped(body: bytes, minted: Minted | None, answer: object) -> tuple[bytes, Minted | None] | None:
    """``body`` with ``minted`` in it, and ``minted``: what :meth:`Feedback.stamp` and
    :meth:`Feedback.stamp_rescued` answer. ``answer``: ``body`` parsed, or None when it was not read."""
    if answer is None and _plain(body):
        return _splice(body, minted), minted
    stamped = inject(body, minted, answer)  # a parsed answer's common case is the same splice
    return None if stamped is None else (stamped, minted)


class ReplayCache:
    """Nonces already counted by this replica, the newest ``capacity`` of them. A replayed label is refused
    by the replica that counted it while the nonce is remembered; another replica cannot know (docs)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[int, None] = OrderedDict()

    def first_time(self, nonce: int) -> bool:
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


@dataclass(slots=True)
class _Pending:
    revision: str
    values: tuple[Any, ...] | None  # None: the shadow failed the request (no row has a prediction)
    expires: float
    size: int


class PendingAnswers:
    """Shadow answers waiting for a label, by the nonce of the client's answer; bounded by age and bytes.

    A shadow that failed the copy (an error, a timeout, no readable answer) is kept too, as ``values`` None:
    its label scores it as having no prediction for any row. A copy this gateway never sent (its mirror
    queue was full) or an answer dropped here (``expired``, ``full``) leaves nothing, and its label counts
    unpaired: the gateway's own limits are never the shadow's fault."""

    def __init__(self, ttl: float = 900.0, max_bytes: int = 64 << 20) -> None:
        self.ttl, self.max_bytes = ttl, max_bytes
        self._items: OrderedDict[int, _Pending] = OrderedDict()
        self.bytes = 0
        self.dropped: dict[str, int] = {"expired": 0, "full": 0}

    def put(self, nonce: int, revision: str, values: Sequence[Any] | None, now: float) -> None:
        size = 64 + 16 * len(values or ())
        self._expire(now)
        while self._items and self.bytes + size > self.max_bytes:
            self._drop_oldest("full")
        if size > self.max_bytes:
            self.dropped["full"] += 1
            return
        self._items[nonce] = _Pending(revision, None if values is None else tuple(values), now + self.ttl, size)
        self.bytes += size

    def take(self, nonce: int, now: float) -> _Pending | None:
        self._expire(now)
        item = self._items.pop(nonce, None)
        if item is not None:
            self.bytes -= item.size
        return item

    def _expire(self, now: float) -> None:
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.expires > now:
                return
            self._drop_oldest("expired")

    def _drop_oldest(self, reason: str) -> None:
        _, item = self._items.popitem(last=False)
        self.bytes -= item.size
        self.dropped[reason] += 1

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Scores:
    """Counters the feedback series export (docs/metrics.md): per (track, revision, outcome), the regressor
    sums, the pairs per (shadow revision, result), refusals and unpaired labels per reason.

    A labelled row the track has no prediction for (contract.feedback, "A row without a prediction") counts
    against it: ``incorrect`` (classifiers), or ``failed`` with an error of each clip bound in the clipped
    sums (regressors: beyond every bound); it has no finite error for the unclipped sums and the histogram.
    So the rows every test divides by (the outcomes' total, the pairs) are the rows in the clipped sums."""

    labels: dict[tuple[str, str, str], int] = field(default_factory=dict)
    abs_error: dict[tuple[str, str], float] = field(default_factory=dict)
    abs_error_rows: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """Per (track, revision): labelled rows per bucket of ``abs_error_bounds`` (not cumulative)."""
    squared_error: dict[tuple[str, str], float] = field(default_factory=dict)
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    pair_abs_error: dict[tuple[str, str], float] = field(default_factory=dict)
    pair_diff_squares: dict[str, float] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    unpaired: dict[str, int] = field(default_factory=dict)
    failed: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Per (track, revision, reason): labelled rows the track had no prediction for, counted against it."""
    uncounted: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Per (track, revision, reason): labelled rows accepted and not scored (``served_before_step``)."""
    clipped_parts: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """Per (track, revision): rows, sum and sum of squares of the errors per interval of ``CLIP_BOUNDS``
    (:func:`_add_clipped`); the sums clipped at each bound follow at scrape time (``clipped_abs_error``)."""
    pair_clipped_parts: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """The same per (shadow revision, side) on paired rows."""
    pair_clipped_diff_parts: dict[str, list[float]] = field(default_factory=dict)
    """Per shadow revision: the parts of ``(min(e_c, bound) - min(e_s, bound))^2`` per bound
    (:func:`_add_clipped_difference`)."""

    def score(self, token: Token, labels: Sequence[Any]) -> None:
        """Each label against what the token's track served; a row it has no prediction for counts against
        it (never NaN or Inf in a sum: one such value would blind the analysis for the process's life)."""
        key = (token.track, token.revision)
        served: Sequence[Any] = token.predictions
        for label, predicted in zip(labels, served, strict=True):
            if not answered(predicted):
                self._add(self.labels, (*key, "incorrect" if token.classes else "failed"), 1)
                self._add(self.failed, (*key, _why(token, token.failed)), 1)
                if not token.classes:
                    _add_clipped(self.clipped_parts, key, math.inf)
            elif token.classes:
                outcome = "correct" if str(label) == predicted else "incorrect"
                self._add(self.labels, (*key, outcome), 1)
            else:
                error = abs(float(label) - float(predicted))
                self._add(self.labels, (*key, "scored"), 1)
                self._add(self.abs_error, key, error)
                self._bucket(key, error)
                self._add(self.squared_error, key, error * error)
                _add_clipped(self.clipped_parts, key, error)

    def pair(self, token: Token, shadow_revision: str, shadow: Sequence[Any] | None, labels: Sequence[Any]) -> None:
        """Each label against both answers to the same request (``token`` is stable's, ``shadow`` the
        candidate's; None: the shadow failed the request), by which one was right (or closer). A side
        without a prediction for a row is wrong on it (regressors: its error is beyond every clip bound), so
        every labelled row of the token is a pair; the unclipped sums take the pairs both sides answered."""
        served: Sequence[Any] = token.predictions
        for label, mine, theirs in zip(labels, served, _shadow_rows(token, shadow), strict=True):
            if theirs is None:
                self._add(self.failed, ("shadow", shadow_revision, _why(token, shadow is None)), 1)
            if token.classes:
                stable_right = mine is not None and str(label) == mine
                shadow_right = theirs is not None and str(label) == theirs
                result = {
                    (True, True): "both_right",
                    (False, False): "both_wrong",
                    (True, False): "stable_only",
                    (False, True): "candidate_only",
                }[(stable_right, shadow_right)]
            else:
                e_s = abs(float(label) - float(mine)) if answered(mine) else math.inf
                e_c = math.inf if theirs is None else abs(float(label) - theirs)
                if e_s == e_c:
                    result = "both_wrong" if math.isinf(e_s) else "both_right"
                else:
                    result = "stable_only" if e_s < e_c else "candidate_only"
                if math.isfinite(e_s) and math.isfinite(e_c):
                    self._add(self.pair_abs_error, (shadow_revision, "stable"), e_s)
                    self._add(self.pair_abs_error, (shadow_revision, "candidate"), e_c)
                    self._add(self.pair_diff_squares, shadow_revision, (e_c - e_s) ** 2)
                _add_clipped(self.pair_clipped_parts, (shadow_revision, "stable"), e_s)
                _add_clipped(self.pair_clipped_parts, (shadow_revision, "candidate"), e_c)
                _add_clipped_difference(self.pair_clipped_diff_parts, shadow_revision, e_s, e_c)
            self._add(self.pairs, (shadow_revision, result), 1)

    def copy(self) -> Scores:
        """A copy to read while labels are counted on another thread."""
        fields = {name: dict(getattr(self, name)) for name in self.__dataclass_fields__}
        for name in ("abs_error_rows", "clipped_parts", "pair_clipped_parts", "pair_clipped_diff_parts"):
            fields[name] = {key: list(values) for key, values in getattr(self, name).items()}
        return Scores(**fields)

    @property
    def clipped_abs_error(self) -> dict[tuple[str, str], list[float]]:
        """Per (track, revision): the sums of ``min(error, bound)``, one per bound of ``CLIP_BOUNDS``."""
        return {key: _clipped_totals(parts)[0] for key, parts in self.clipped_parts.items()}

    @property
    def clipped_squared_error(self) -> dict[tuple[str, str], list[float]]:
        """Per (track, revision): the sums of ``min(error, bound)^2``, one per bound."""
        return {key: _clipped_totals(parts)[1] for key, parts in self.clipped_parts.items()}

    @property
    def pair_clipped_abs_error(self) -> dict[tuple[str, str], list[float]]:
        """Per (shadow revision, side): the sums of ``min(error, bound)`` on paired rows, one per bound."""
        return {key: _clipped_totals(parts)[0] for key, parts in self.pair_clipped_parts.items()}

    @property
    def pair_clipped_diff_squares(self) -> dict[str, list[float]]:
        """Per shadow revision: the sums of ``(min(e_c, bound) - min(e_s, bound))^2``, one per bound."""
        return {key: _clipped_difference_totals(parts) for key, parts in self.pair_clipped_diff_parts.items()}

    @property
    def abs_error_bounds(self) -> tuple[float, ...]:
        """The histogram's upper bounds: the contract's buckets, always ending in +Inf."""
        return _ABS_ERROR_BOUNDS

    def _bucket(self, key: tuple[str, str], error: float) -> None:
        counts = self.abs_error_rows.get(key)
        if counts is None:
            counts = self.abs_error_rows[key] = [0] * len(_ABS_ERROR_BOUNDS)
        counts[bisect_left(_ABS_ERROR_BOUNDS, error)] += 1

    @staticmethod
    def _add(counter: dict[Any, Any], key: Any, amount: float) -> None:
        counter[key] = counter.get(key, 0) + amount


_CLIPS: Final = len(CLIP_BOUNDS)


def _shadow_rows(token: Token, shadow: Sequence[Any] | None) -> list[Any]:
    """The shadow's prediction for each row of the token: a class (str) or a finite number, None where it
    has none (it failed the request, its answer had fewer rows, NaN or ±Inf, a value of the other kind)."""
    rows = len(token.predictions)
    if shadow is None:
        return [None] * rows
    values = [*shadow[:rows], *[None] * (rows - len(shadow))]
    if token.classes:
        return [None if x is None else str(x) for x in values]
    return [float(x) if (type(x) is float or type(x) is int) and math.isfinite(x) else None for x in values]


def _why(token: Token, failed: bool) -> str:
    """The reason a row without a prediction is counted under (``failed``: the track failed the request)."""
    return REQUEST_FAILED if failed else NO_PREDICTION if token.classes else NON_FINITE


def _add_clipped(parts: dict[Any, list[float]], key: Any, error: float) -> None:
    """Count ``error`` in the interval of ``CLIP_BOUNDS`` it falls in (``k`` bounds below it): its row, the
    error and its square. Clipped at bound ``j`` a row is itself when ``k <= j``, else the bound, so the
    clipped sums are cumulative sums of these (:func:`_clipped_totals`): three additions a row, not two
    per bound, and only additions of non-negative numbers (no cancellation). A row without a prediction
    (``error`` Inf) is beyond every bound: the bound at each, and nothing else is added."""
    row = parts.get(key)
    if row is None:
        row = parts[key] = [0.0] * (3 * (_CLIPS + 1))
    k = bisect_left(CLIP_BOUNDS, error)
    row[k] += 1.0
    if k < _CLIPS:  # beyond the top bound a row is that bound wherever it is: its error is never summed
        row[_CLIPS + 1 + k] += error
        row[2 * (_CLIPS + 1) + k] += error * error


def _clipped_totals(row: list[float]) -> tuple[list[float], list[float]]:
    """The sums of ``min(error, bound)`` and of its square at each bound, from :func:`_add_clipped`'s parts."""
    rows = sum(row[: _CLIPS + 1])
    below = total = squares = 0.0
    sums, sums_sq = [], []
    for j, bound in enumerate(CLIP_BOUNDS):
        below += row[j]
        total += row[_CLIPS + 1 + j]
        squares += row[2 * (_CLIPS + 1) + j]
        beyond = rows - below
        sums.append(total + bound * beyond)
        sums_sq.append(squares + bound * bound * beyond)
    return sums, sums_sq


def _add_clipped_difference(parts: dict[str, list[float]], key: str, e_s: float, e_c: float) -> None:
    """One pair's ``(min(e_c, b) - min(e_s, b))^2`` at every bound ``b``: ``(e_c - e_s)^2`` once both errors
    are within ``b`` (counted at the interval of the larger, summed cumulatively), ``(b - smaller)^2`` for the
    few bounds between the two errors (added at each), 0 below both. Either error may be Inf (no prediction:
    beyond every bound)."""
    row = parts.get(key)
    if row is None:
        row = parts[key] = [0.0] * (2 * _CLIPS + 1)
    k_s, k_c = bisect_left(CLIP_BOUNDS, e_s), bisect_left(CLIP_BOUNDS, e_c)
    if max(k_s, k_c) < _CLIPS:  # the slot past the top bound is never summed
        row[max(k_s, k_c)] += (e_c - e_s) ** 2
    smaller = min(e_s, e_c)
    for j in range(min(k_s, k_c), max(k_s, k_c)):
        row[_CLIPS + 1 + j] += (CLIP_BOUNDS[j] - smaller) ** 2


def _clipped_difference_totals(row: list[float]) -> list[float]:
    """The sums of the squared clipped differences at each bound, from :func:`_add_clipped_difference`."""
    within, out = 0.0, []
    for j in range(_CLIPS):
        within += row[j]
        out.append(within + row[_CLIPS + 1 + j])
    return out


def check(keys: FeedbackKeys | None, body: object, now: int, max_age: float) -> tuple[Token, list[Any]]:
    """Verify a feedback body ``{"feedback_id", "labels": [...] | "label": x}``; raises TokenError with the
    reason for the refusal counter (``disabled``, ``malformed``, ``forged``, ``unknown_key``, ``expired``,
    ``labels``: wrong count or type, or a class the model does not have)."""
    if keys is None:
        raise TokenError("disabled", "feedback is not enabled for this model")
    if not isinstance(body, dict):
        raise TokenError("malformed", 'feedback must be a JSON object {"feedback_id": ..., "labels": [...]}')
    feedback_id = body.get("feedback_id")
    if not isinstance(feedback_id, str):
        raise TokenError("malformed", "feedback_id (a string) is required")
    token = verify(keys, feedback_id, now, max_age)
    labels = body["labels"] if "labels" in body else [body["label"]] if "label" in body else None
    if not isinstance(labels, list):
        raise TokenError("labels", "labels (a list, one per row) or label (one row) is required")
    problem = labels_problem(token, labels)
    if problem is not None:
        raise TokenError("labels", problem)
    return token, labels


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """The gateway's feedback settings (flags of ``mlrollout-gateway``; docs/gateway.md, "Feedback")."""

    keys_path: str
    replica: int = 0  # this replica's IPv4 address as an integer (0: unknown, labels are never forwarded)
    port: int = 8080  # where every replica listens (labels are forwarded to the minting replica's address)
    max_rows: int = 64
    max_age: float = 7 * 86400.0
    max_body: int = 64 << 10
    pending_ttl: float = 900.0
    pending_bytes: int = 64 << 20
    replay_capacity: int = 200_000


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer a feedback request: the status and a JSON body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Forward:
    """A label for an answer minted by another replica, which counts it (and holds the shadow's answer)."""

    replica: int
    token: Token
    labels: list[Any]
    feedback_id: str


def _proof(key: bytes, feedback_id: str) -> str:
    return hmac.new(key, b"forwarded:" + feedback_id.encode(), hashlib.sha256).hexdigest()[:32]


_STATUS: Final = {"disabled": 404, "malformed": 400, "labels": 400, "forged": 403, "unknown_key": 403,
                  "expired": 410, "replayed": 409, "too_large": 413, "busy": 503}  # fmt: skip


class Feedback:
    """One replica's feedback state: keys, the minter, replay cache, pending shadow answers, scores.

    Labels are checked and counted on the label worker's thread (feedback_queue.py), shadow answers kept and
    the counters read on the event loop: ``lock`` guards the replay cache, the pending answers and the scores.
    ``step_started_at`` is the active route table's (set by the gateway as it applies one; read once per
    label): labels for answers served before it are not scored (contract.feedback.counts_in_step)."""

    def __init__(self, config: FeedbackConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.keys: FeedbackKeys | None = None
        self.minter: Minter | None = None
        self.replay = ReplayCache(config.replay_capacity)
        self.pending = PendingAnswers(config.pending_ttl, config.pending_bytes)
        self.scores = Scores()
        self.step_started_at: float | None = None
        self._keys_stamp: float | None = None
        self.reload_keys()

    def reload_keys(self) -> None:
        """Read the keys again when their file changed (a rotation, or the Secret appearing)."""
        try:
            stamp = os.stat(self.config.keys_path).st_mtime
        except OSError:
            stamp = None
        if stamp == self._keys_stamp and self._keys_stamp is not None:
            return
        self._keys_stamp = stamp
        self.keys = load_keys(self.config.keys_path) if stamp is not None else None
        self.minter = Minter(self.keys, self.config.replica, self.config.max_rows) if self.keys else None
        if self.keys is not None:
            log.info("feedback ids on: %d key(s), signing with key %d", len(self.keys.keys), self.keys.current)

    def stamp(
        self, track: str, revision: str, body: bytes, mirrored: bool, now: int, predicted: bytes | None = None
    ) -> tuple[bytes, Minted | None] | None:
        """The answer with its feedback id, and the id; None when the answer cannot carry one (it is then
        passed on untouched). The id is None when the answer has rows and none can be labelled (its first
        class label is too long to carry): the answer then says ``feedback_rows: 0`` and gets no id.

        ``predicted``: the upstream's predictions header (contract.predicted), when it sent one: its
        predictions are signed as they are, and the answer is not read when its bytes show the id can be
        spliced in (:func:`_plain`; the header's PLAIN flag is not taken on trust: an upstream that says
        PLAIN of an answer that is not one plain JSON object must not get the id spliced as if it were).
        Without it (or with one that does not parse) the answer is read, once."""
        minter = self.minter
        if minter is None:
            return None
        if predicted is not None and (section := minter.section(predicted)) is not None:
            minted = minter.mint_section(track, revision, section, now, mirrored)
            if _plain(body):  # _stamped's first branch, without its call (this runs once per answer)
                return _splice(body, minted), minted
            return _stamped(body, minted, None)
        try:
            answer = orjson.loads(body)  # once: for the predictions, and for where the id goes
        except orjson.JSONDecodeError:
            return None
        read = read_answer(answer) if type(answer) is dict else None
        if read is None or not read.values:
            return None
        return _stamped(body, minter.mint_carried(track, revision, read, now, mirrored), answer)

    def stamp_rescued(
        self, track: str, revision: str, body: bytes, own: bytes | None, now: int, own_predicted: bytes | None = None
    ) -> tuple[bytes, Minted | None] | None:
        """A fallback's answer (``body``) to a request routed to ``track``, with an id that scores ``track``,
        never what answered: on its own answer ``own`` when it gave one that was not served (low confidence,
        held for review), else as having failed the request (no row has a prediction; the rows are the
        served answer's). Labels for the answer thus count against the model that was asked, whatever
        rescued the client (docs/gateway.md, "Feedback"). None when neither answer shows the rows; the id
        None (``feedback_rows: 0``) when ``own`` shows rows and none can be carried, as :meth:`stamp`.
        ``own_predicted``: the predictions header ``own`` came with, if any: its predictions are taken unread
        (the same token as reading ``own``, contract.predicted.read_predicted)."""
        if self.minter is None:
            return None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(answer) is not dict:
            return None
        predicted = None
        if own_predicted is not None and own is not None:
            predicted = read_predicted(own_predicted)
        if predicted is None and own is not None:
            predicted = predictions_of(own)
        failed = predicted is None or not predicted.values
        if failed:
            served = read_answer(answer)
            if served is None or not served.values:
                return None
            predicted = without_predictions(served)
        assert predicted is not None
        return _stamped(body, self.minter.mint_carried(track, revision, predicted, now, failed=failed), answer)

    def shadow_answered(
        self, nonce: int, revision: str, body: bytes, now: float, predicted: bytes | None = None
    ) -> None:
        """Keep the shadow's prediction for the request whose client answer had ``nonce``; an answer that
        shows none is kept as the shadow having failed the request. ``predicted``: the shadow's predictions
        header, when it sent one (:func:`shadow_predictions`)."""
        values = shadow_predictions(body, predicted)
        with self.lock:
            self.pending.put(nonce, revision, values, now)

    def shadow_failed(self, nonce: int, revision: str, now: float) -> None:
        """The shadow failed the copy of the request whose client answer had ``nonce`` (an error, a timeout,
        not a 200): its label will score the shadow as having no prediction for any row."""
        with self.lock:
            self.pending.put(nonce, revision, None, now)

    def snapshot(self) -> tuple[Scores, dict[str, int]]:
        """The scores and the pending answers' drops as of now (for /metrics, read on the event loop)."""
        with self.lock:
            return self.scores.copy(), dict(self.pending.dropped)

    def refuse(self, reason: str, message: str) -> Answer:
        with self.lock:
            self.scores.refused[reason] = self.scores.refused.get(reason, 0) + 1
        return Answer(_STATUS.get(reason, 400), {"error": message, "reason": reason})

    def forward_proof(self, feedback_id: str) -> bytes:
        """The header value that tells the minting replica a label was forwarded by a replica (one holding the
        key), not sent by a client that wants it counted by every replica in turn."""
        assert self.keys is not None
        key = self.keys.keys[self.keys.current]
        return b"%d:%s" % (self.keys.current, _proof(key, feedback_id).encode())

    def oversized(self, body: bytes) -> Answer | None:
        """The refusal of a body over ``max_body`` (checked before a label is queued, so the queue holds at most
        ``capacity`` times ``max_body`` bytes), or None."""
        if len(body) > self.config.max_body:
            return self.refuse("too_large", f"feedback bodies are limited to {self.config.max_body} bytes")
        return None

    def _forwarded(self, proof: bytes | None, feedback_id: str) -> bool:
        if not proof or self.keys is None:
            return False
        key_id, _, mac = proof.partition(b":")
        key = self.keys.keys.get(int(key_id)) if key_id.isdigit() and len(key_id) <= 3 else None
        return key is not None and hmac.compare_digest(mac, _proof(key, feedback_id).encode())

    def receive(self, body: bytes, now: float, forwarded: bytes | None = None) -> Answer | Forward:
        """Check a feedback request and count it here, or say which replica should (the minting one).
        ``forwarded``: the forwarding header's value, if any (see :meth:`forward_proof`)."""
        if self.keys is None:
            return self.refuse("disabled", "feedback is not enabled for this model")
        oversized = self.oversized(body)
        if oversized is not None:
            return oversized
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.refuse("malformed", 'feedback must be JSON: {"feedback_id": "...", "labels": [...]}')
        try:
            token, labels = check(self.keys, parsed, int(now), self.config.max_age)
        except TokenError as exc:
            return self.refuse(exc.reason, str(exc))
        # the minting replica counts: its replay cache is the one every copy of this id meets, and it holds
        # the shadow's answer; labels are forwarded there once (never further)
        if (
            token.replica
            and token.replica != self.config.replica
            and not self._forwarded(forwarded, parsed["feedback_id"])
        ):
            return Forward(token.replica, token, labels, parsed["feedback_id"])
        return self.count(token, labels, now)

    def count(self, token: Token, labels: list[Any], now: float, unpaired: str | None = None) -> Answer:
        """Score the labels against the client's answer, and against the shadow's when this replica has it
        (``unpaired``: why it cannot, e.g. ``replica_gone``); once per feedback id in this replica's memory.

        A label for an answer served before the current step started is accepted (202: the client did nothing
        wrong) and not scored: counted as ``served_before_step`` per row, its shadow answer released, its id
        consumed like any other (contract.feedback.counts_in_step)."""
        in_step = counts_in_step(token.issued, self.step_started_at)  # one table's start for the whole label
        with self.lock:
            first = self.replay.first_time(token.nonce)
            paired = False
            if first and not in_step:
                key = (token.track, token.revision, SERVED_BEFORE_STEP)
                self.scores.uncounted[key] = self.scores.uncounted.get(key, 0) + len(labels)
                if token.mirrored:
                    self.pending.take(token.nonce, now)
            elif first:
                self.scores.score(token, labels)
                if token.mirrored:
                    shadow = self.pending.take(token.nonce, now) if unpaired is None else None
                    if shadow is not None:
                        self.scores.pair(token, shadow.revision, shadow.values, labels)
                        paired = True
                    else:
                        reason = unpaired or "no_shadow_answer"
                        self.scores.unpaired[reason] = self.scores.unpaired.get(reason, 0) + 1
        if not first:
            return self.refuse("replayed", "this feedback_id was already counted")
        if not in_step:
            return Answer(202, {"counted": 0, "paired": False, "uncounted": len(labels), "reason": SERVED_BEFORE_STEP})
        return Answer(202, {"counted": len(labels), "paired": paired})
