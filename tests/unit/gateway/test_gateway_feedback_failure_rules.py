"""Rows a track has no prediction for count against it (contract.feedback, "A row without a prediction"):
a NaN or ±Inf regressor value, a classifier row without a class, a request the track failed and a fallback
answered, a shadow copy that failed. Left out, they would score a model that fails on hard rows only on the
rows it answered. A shadow answer the gateway itself dropped stays unpaired, never wrong."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.feedback_samples import KEYS, NOW, WINE

from mlrollout_serving.contract.feedback import (
    MAX_LABEL_BYTES,
    Token,
    answered,
    mint,
    verify,
)
from mlrollout_serving.contract.metrics import CLIP_BOUNDS
from mlrollout_serving.gateway.feedback import (
    Answer,
    Feedback,
    FeedbackConfig,
    Minter,
    Predicted,
    Scores,
    predictions_of,
)

DIABETES = b'{"outputs":[{"name":"variable","datatype":"FP32","shape":[3,1],"data":[100.0,150.0,200.0]}]}'


def _token(track: str, revision: str, predicted: Predicted, mirrored: bool = False) -> Token:
    return verify(KEYS, Minter(KEYS, 0).mint(track, revision, predicted, NOW, mirrored).token, NOW, 60)


def _feedback(tmp_path: Path, **config: float) -> Feedback:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(b"s" * 32).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=1, **config))  # type: ignore[arg-type]


def _labelled(scores: Scores, key: tuple[str, str]) -> int:
    return sum(n for (track, revision, _), n in scores.labels.items() if (track, revision) == key)


def _clipped_rows(scores: Scores, key: tuple[str, str]) -> float:
    return sum(scores.clipped_parts[key][: len(CLIP_BOUNDS) + 1])


def test_rows_without_a_prediction_survive_the_token_for_both_kinds_of_model() -> None:
    classes = Token("candidate", "r2", NOW, 7, 0, ("1", None, "x" * MAX_LABEL_BYTES), classes=True, class_count=0)
    back = verify(KEYS, mint(KEYS, classes), NOW, 60)
    assert back.predictions == ("1", None, "x" * MAX_LABEL_BYTES) and not back.failed  # the longest label fits
    one = verify(KEYS, mint(KEYS, Token("stable", "r1", NOW, 8, 0, (None,), classes=True, failed=True)), NOW, 60)
    assert one.predictions == (None,) and one.failed
    values = verify(KEYS, mint(KEYS, Token("stable", "r1", NOW, 9, 0, (1.5, math.nan), classes=False)), NOW, 60)
    assert values.predictions[0] == 1.5 and math.isnan(values.predictions[1])
    assert [answered(p) for p in ("0", None, 1.0, math.nan, math.inf, -math.inf)] == [True, False, True] + [False] * 3


def test_a_non_finite_regressor_prediction_counts_as_an_error_of_the_bound_at_every_bound() -> None:
    # the model server writes NaN and +-Inf as null; an FP64 value beyond float32 cannot be carried as is
    answer = b'{"outputs":[{"name":"variable","datatype":"FP64","shape":[4],"data":[null,2.0,1e39,-1e39]}]}'
    predicted = predictions_of(answer)
    assert predicted is not None and not predicted.classes
    assert math.isnan(predicted.values[0]) and predicted.values[1:] == [2.0, math.inf, -math.inf]
    token = _token("candidate", "r2", predicted)
    scores = Scores()
    scores.score(token, [1.0, 3.0, 1.0, 1.0])
    key = ("candidate", "r2")
    assert scores.labels == {(*key, "scored"): 1, (*key, "failed"): 3}
    assert scores.failed == {(*key, "non_finite_prediction"): 3}
    # the unclipped sums and the histogram hold the finite row only (no finite error for the others)
    assert scores.abs_error[key] == 1.0 and scores.squared_error[key] == 1.0 and sum(scores.abs_error_rows[key]) == 1
    for j, bound in enumerate(CLIP_BOUNDS):  # the failed rows are the bound wherever it is
        assert scores.clipped_abs_error[key][j] == min(1.0, bound) + 3 * bound
        assert scores.clipped_squared_error[key][j] == min(1.0, bound) ** 2 + 3 * bound**2
    assert _labelled(scores, key) == _clipped_rows(scores, key) == 4  # every row a test divides by is summed
    assert all(math.isfinite(x) for row in scores.clipped_parts.values() for x in row)


def test_a_classifier_row_without_a_class_is_a_wrong_answer() -> None:
    probabilities = orjson.dumps(
        {"outputs": [{"name": "p", "datatype": "FP32", "shape": [2, 3], "data": [[0.7, 0.2, 0.1], [None, 0, 1]]}]}
    )
    predicted = predictions_of(probabilities)
    assert predicted == Predicted(True, ["0", None], class_count=3)  # not misread as six regressor values
    token = _token("candidate", "r2", predicted)
    scores = Scores()
    scores.score(token, ["0", "1"])
    assert scores.labels == {("candidate", "r2", "correct"): 1, ("candidate", "r2", "incorrect"): 1}
    assert scores.failed == {("candidate", "r2", "no_prediction"): 1}


@pytest.mark.parametrize(("served", "labels", "outcome"), [(WINE, [1, 2], "incorrect"),
                                                           (DIABETES, [100.0, 150.0, 200.0], "failed")])  # fmt: skip
def test_a_request_the_candidate_failed_and_a_fallback_answered_counts_against_the_candidate(
    tmp_path: Path, served: bytes, labels: list[object], outcome: str
) -> None:
    """The client got stable's (correct) answer; the id names the candidate, which answered nothing."""
    feedback = _feedback(tmp_path)
    stamped = feedback.stamp_rescued("candidate", "r2", served, None, NOW)
    assert stamped is not None
    body, minted = stamped
    assert minted is not None
    assert orjson.loads(body)["parameters"]["feedback_id"] == minted.token and minted.rows == len(labels)
    token = verify(KEYS, minted.token, NOW, 60)
    assert (token.track, token.revision, token.failed, token.mirrored) == ("candidate", "r2", True, False)
    assert feedback.receive(orjson.dumps({"feedback_id": minted.token, "labels": labels}), NOW) == Answer(
        202, {"counted": len(labels), "paired": False}
    )
    key = ("candidate", "r2")
    assert feedback.scores.labels == {(*key, outcome): len(labels)}  # stable is credited nothing
    assert feedback.scores.failed == {(*key, "request_failed"): len(labels)}
    if outcome == "failed":
        assert feedback.scores.clipped_abs_error[key] == [3 * b for b in CLIP_BOUNDS]
        assert key not in feedback.scores.abs_error


def test_a_low_confidence_answer_a_fallback_replaced_is_scored_as_the_candidate_answered_it(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    own = WINE.replace(b"[1,2]", b"[0,2]")  # the candidate's own answer, not served
    stamped = feedback.stamp_rescued("candidate", "r2", WINE, own, NOW)
    assert stamped is not None and stamped[1] is not None
    token = verify(KEYS, stamped[1].token, NOW, 60)
    assert token.predictions == ("0", "2") and not token.failed
    feedback.receive(orjson.dumps({"feedback_id": stamped[1].token, "labels": [1, 2]}), NOW)
    assert feedback.scores.labels == {("candidate", "r2", "correct"): 1, ("candidate", "r2", "incorrect"): 1}
    assert feedback.scores.failed == {}
    # no answer that shows the rows: no id (nothing a label could be counted against)
    assert feedback.stamp_rescued("candidate", "r2", b'{"error": "x"}', None, NOW) is None


def test_a_failed_shadow_copy_is_wrong_on_every_row_of_the_pair(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    _, minted = feedback.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    assert minted is not None
    feedback.shadow_failed(minted.nonce, "r2", now=NOW)  # an error, a timeout, not a 200
    got = feedback.receive(orjson.dumps({"feedback_id": minted.token, "labels": [1, 0]}), NOW)
    assert got == Answer(202, {"counted": 2, "paired": True})
    assert feedback.scores.pairs == {("r2", "stable_only"): 1, ("r2", "both_wrong"): 1}
    assert feedback.scores.failed == {("shadow", "r2", "request_failed"): 2}
    # a 200 that shows no prediction is the shadow failing the request too
    _, second = feedback.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    assert second is not None
    feedback.shadow_answered(second.nonce, "r2", b'{"outputs": []}', now=NOW)
    assert feedback.receive(orjson.dumps({"feedback_id": second.token, "labels": [1, 2]}), NOW).body["paired"]  # type: ignore[union-attr]
    assert feedback.scores.pairs[("r2", "stable_only")] == 3


def test_a_shadow_answer_the_gateway_dropped_leaves_the_label_unpaired_never_wrong(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path, pending_ttl=10.0, pending_bytes=100)
    _, first = feedback.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    _, second = feedback.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    assert first is not None and second is not None
    feedback.shadow_answered(first.nonce, "r2", WINE, now=NOW)
    feedback.shadow_failed(second.nonce, "r2", now=NOW)  # the store holds one: the first answer is dropped (full)
    _, third = feedback.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    assert third is not None
    feedback.shadow_failed(third.nonce, "r2", now=NOW)  # the failure is dropped for the next one: still unpaired
    for minted in (first, second):
        got = feedback.receive(orjson.dumps({"feedback_id": minted.token, "labels": [0, 0]}), NOW + 1)
        assert got == Answer(202, {"counted": 2, "paired": False})
    # a copy never sent (the mirror queue full) leaves nothing either, and the expired one likewise
    assert feedback.receive(orjson.dumps({"feedback_id": third.token, "labels": [0, 0]}), NOW + 11).body == {  # type: ignore[union-attr]
        "counted": 2, "paired": False}  # fmt: skip
    assert feedback.scores.unpaired == {"no_shadow_answer": 3} and feedback.pending.dropped == {"expired": 1, "full": 2}
    assert feedback.scores.pairs == {} and not any(track == "shadow" for track, _, _ in feedback.scores.failed)


def test_a_regressor_pair_counts_a_failed_side_as_the_bound_and_pads_a_short_shadow_answer() -> None:
    scores = Scores()
    stable = _token("stable", "r1", Predicted(False, [1.0, math.nan, 3.0, math.nan]), mirrored=True)
    scores.pair(stable, "r2", [2.0, 5.0, math.nan], [0.0, 0.0, 0.0, 0.0])  # the shadow answered three rows
    # errors (stable, shadow): (1, 2), (inf, 5), (3, inf), (inf, inf: the shadow had no fourth row)
    assert scores.pairs == {("r2", "stable_only"): 2, ("r2", "candidate_only"): 1, ("r2", "both_wrong"): 1}
    assert scores.failed == {("shadow", "r2", "non_finite_prediction"): 2}  # stable's own rows count in score()
    assert scores.pair_abs_error == {("r2", "stable"): 1.0, ("r2", "candidate"): 2.0}  # both finite only
    for j, b in enumerate(CLIP_BOUNDS):
        s, c = [min(1.0, b), b, min(3.0, b), b], [min(2.0, b), min(5.0, b), b, b]
        assert scores.pair_clipped_abs_error[("r2", "stable")][j] == pytest.approx(sum(s))
        assert scores.pair_clipped_abs_error[("r2", "candidate")][j] == pytest.approx(sum(c))
        direct = sum((y - x) ** 2 for x, y in zip(s, c, strict=True))
        assert scores.pair_clipped_diff_squares["r2"][j] == pytest.approx(direct)
    assert sum(scores.pairs.values()) == sum(scores.pair_clipped_parts[("r2", "stable")][: len(CLIP_BOUNDS) + 1])


def test_a_classifier_pair_counts_a_row_without_a_class_as_wrong_on_that_side() -> None:
    scores = Scores()
    stable = _token("stable", "r1", Predicted(True, ["0", None, "1"]), mirrored=True)
    scores.pair(stable, "r2", [None, "1", None], ["0", "1", "0"])
    assert scores.pairs == {("r2", "stable_only"): 1, ("r2", "candidate_only"): 1, ("r2", "both_wrong"): 1}
    assert scores.failed == {("shadow", "r2", "no_prediction"): 2}


finite_or_not = st.one_of(st.floats(-1e4, 1e4), st.just(math.nan), st.just(math.inf))


@given(st.lists(st.tuples(finite_or_not, finite_or_not, st.floats(-1e4, 1e4)), min_size=1, max_size=30))
def test_every_labelled_row_is_in_the_clipped_sums_and_counts_once(rows: list[tuple[float, float, float]]) -> None:
    """Whatever mix of answered and failed rows: the rows the tests divide by are the rows summed, each
    failed row at the bound, and no sum is ever NaN or Inf."""
    scores = Scores()
    stable = _token("stable", "r1", Predicted(False, [s for s, _, _ in rows]), mirrored=True)
    labels = [y for _, _, y in rows]
    scores.score(stable, labels)
    scores.pair(stable, "r2", [c for _, c, _ in rows], labels)
    carried = stable.predictions  # float32, as the token holds them

    def error(p: float, y: float) -> float:
        return abs(y - p) if math.isfinite(p) else math.inf

    e_s = [error(float(p), y) for p, y in zip(carried, labels, strict=True)]  # type: ignore[arg-type]
    e_c = [error(c, y) for _, c, y in rows]
    assert _labelled(scores, ("stable", "r1")) == sum(scores.pairs.values()) == len(rows)
    for j, b in enumerate(CLIP_BOUNDS):
        assert scores.clipped_abs_error[("stable", "r1")][j] == pytest.approx(sum(min(e, b) for e in e_s), abs=1e-6)
        assert scores.pair_clipped_abs_error[("r2", "candidate")][j] == pytest.approx(
            sum(min(e, b) for e in e_c), abs=1e-6
        )
        direct = sum((min(c, b) - min(s, b)) ** 2 for s, c in zip(e_s, e_c, strict=True))
        assert scores.pair_clipped_diff_squares["r2"][j] == pytest.approx(direct, rel=1e-6, abs=1e-6)
    for values in (scores.clipped_abs_error, scores.clipped_squared_error, scores.pair_clipped_diff_squares):
        assert all(math.isfinite(x) for row in values.values() for x in row)


def test_a_shadow_answer_of_the_other_kind_is_no_prediction_not_a_crash() -> None:
    scores = Scores()
    stable = _token("stable", "r1", Predicted(False, [1.0, 2.0]), mirrored=True)
    scores.pair(stable, "r2", ["cat", 2.0], [1.0, 2.0])  # a class where a number belongs: no prediction
    assert scores.pairs == {("r2", "stable_only"): 1, ("r2", "both_right"): 1}
    assert scores.failed == {("shadow", "r2", "non_finite_prediction"): 1}
