"""Feedback ids on answers and labels scored against them: the gateway's pure pieces."""

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

from mlrollout_serving.contract.feedback import FeedbackKeys, Token, TokenError, mint, verify
from mlrollout_serving.contract.metrics import ABS_ERROR_BUCKETS, CLIP_BOUNDS
from mlrollout_serving.gateway.feedback import (
    Answer,
    Feedback,
    FeedbackConfig,
    Forward,
    Minter,
    PendingAnswers,
    Predicted,
    ReplayCache,
    Scores,
    check,
    inject,
    load_keys,
    predictions_of,
)


def test_classifier_labels_are_read_from_the_label_output_or_the_arg_max() -> None:
    assert predictions_of(WINE) == Predicted(True, ["1", "2"], class_count=3)
    probabilities_only = orjson.dumps(
        {"outputs": [{"name": "p", "datatype": "FP32", "shape": [2, 3], "data": [[0.7, 0.2, 0.1], [0, 0, 1]]}]}
    )
    assert predictions_of(probabilities_only) == Predicted(True, ["0", "2"], class_count=3)
    strings = orjson.dumps({"outputs": [{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]}]})
    assert predictions_of(strings) == Predicted(True, ["cat"])  # classes unknown: any label is scored
    regressor = orjson.dumps({"outputs": [{"name": "variable", "datatype": "FP32", "shape": [2, 1], "data": [3.5, 4]}]})
    assert predictions_of(regressor) == Predicted(False, [3.5, 4.0])
    for unreadable in (b"", b"[]", b'{"outputs": 3}', b'{"error": "bad"}', b"\xff"):
        assert predictions_of(unreadable) is None


def test_ids_are_spliced_into_the_answer_and_verify() -> None:
    minter = Minter(KEYS, replica=0x0A000107, max_rows=1)
    minted = minter.mint("stable", "abc123", Predicted(True, ["1", "2"], 3), NOW)
    spliced = inject(WINE, minted)
    assert spliced is not None
    answer = orjson.loads(spliced)
    assert answer["parameters"] == {"feedback_id": minted.token, "feedback_rows": 1}  # one row labelled of two
    assert answer["outputs"] == orjson.loads(WINE)["outputs"]
    token = verify(KEYS, answer["parameters"]["feedback_id"], NOW, 60)
    assert (token.track, token.revision, token.predictions, token.truncated) == ("stable", "abc123", ("1",), True)
    with_parameters = orjson.dumps({"outputs": [], "parameters": {"request_id": "r"}})
    respliced = inject(with_parameters, minted)
    assert respliced is not None and orjson.loads(respliced)["parameters"]["request_id"] == "r"
    assert minter.mint("stable", "abc123", Predicted(True, ["1"]), NOW).nonce != minted.nonce


@given(
    labels=st.lists(st.text(max_size=300) | st.integers(-5, 300), min_size=1, max_size=70),
    classes=st.booleans(),
    mirrored=st.booleans(),
    class_count=st.integers(0, 300),
    revision=st.text(alphabet="0123456789abcdef-", max_size=40),
)
def test_a_minter_encodes_what_the_contract_does(
    labels: list[str | int], classes: bool, mirrored: bool, class_count: int, revision: str
) -> None:
    """The gateway's minter (no Token on its path) and the contract's ``mint`` give the same bytes."""
    values = [str(x) for x in labels] if classes else [float(x) for x in labels if isinstance(x, int)] or [1.5]
    minter = Minter(KEYS, replica=0x0A000107)
    minted = minter.mint("candidate", revision, Predicted(classes, values, class_count), NOW, mirrored)
    carried = tuple(values[:64])
    token = Token("candidate", revision, NOW, minted.nonce, 0x0A000107, carried, classes,  # type: ignore[arg-type]
                  truncated=len(values) > 64, mirrored=mirrored, class_count=class_count)  # fmt: skip
    assert minted.token == mint(KEYS, token)
    assert (minted.rows, minted.truncated) == (len(carried), len(values) > 64)


def test_keys_come_from_the_mounted_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"1": base64.b64encode(b"a" * 32).decode(), "2": base64.b64encode(b"b" * 32).decode()}))
    keys = load_keys(str(path))
    assert keys is not None and keys.current == 2
    for bad in ("not json", "[]", '{"1": "!!!"}', '{"x": "YWFh"}', '{"1": "YWFh"}'):  # short keys too
        path.write_text(bad)
        assert load_keys(str(path)) is None
    assert load_keys(str(tmp_path / "missing")) is None


def test_feedback_bodies_are_checked_with_a_reason() -> None:
    minted = Minter(KEYS, 0).mint("candidate", "r2", Predicted(True, ["0", "2"], 3), NOW)
    token, labels = check(KEYS, {"feedback_id": minted.token, "labels": [0, "2"]}, NOW + 5, 60)
    assert token.track == "candidate" and labels == [0, "2"]
    single = Minter(KEYS, 0).mint("stable", "r1", Predicted(True, ["1"]), NOW)
    assert check(KEYS, {"feedback_id": single.token, "label": 1}, NOW, 60)[1] == [1]
    cases = [
        (None, {"feedback_id": minted.token, "labels": [0, 2]}, "disabled"),
        (KEYS, [1, 2], "malformed"),
        (KEYS, {"labels": [0, 2]}, "malformed"),
        (KEYS, {"feedback_id": minted.token[:-4], "labels": [0, 2]}, "forged"),
        (KEYS, {"feedback_id": minted.token}, "labels"),
        (KEYS, {"feedback_id": minted.token, "labels": [0]}, "labels"),
        (KEYS, {"feedback_id": minted.token, "labels": [0, "seven"]}, "labels"),  # not a class it predicts
    ]
    for keys, body, reason in cases:
        with pytest.raises(TokenError) as refused:
            check(keys, body, NOW, 60)
        assert refused.value.reason == reason, body
    with pytest.raises(TokenError, match="older than"):
        check(KEYS, {"feedback_id": minted.token, "labels": [0, 2]}, NOW + 61, 60)


def test_a_replayed_nonce_is_counted_once_while_remembered() -> None:
    cache = ReplayCache(capacity=2)
    assert cache.first_time(1) and not cache.first_time(1)
    assert cache.first_time(2) and cache.first_time(3)
    assert cache.first_time(1)  # forgotten: the cache is bounded (docs say what replicas can guarantee)


def test_pending_answers_are_bounded_by_age_and_bytes() -> None:
    store = PendingAnswers(ttl=10, max_bytes=300)
    store.put(1, "r2", ["0"], now=0)
    store.put(2, "r2", ["1"], now=1)
    assert store.take(1, now=5) is not None and store.take(1, now=5) is None  # taken once
    store.put(3, "r2", ["2"] * 10, now=2)  # 224 bytes: the oldest goes to make room
    assert store.dropped == {"expired": 0, "full": 1} and len(store) == 1
    assert store.take(3, now=13) is None and store.dropped["expired"] == 1
    store.put(4, "r2", ["0"] * 1000, now=20)  # larger than the whole store: dropped, not stored
    assert len(store) == 0 and store.dropped["full"] == 2 and store.bytes == 0


def test_scores_count_labels_per_track_and_pairs_by_who_was_right() -> None:
    scores = Scores()
    minted = Minter(KEYS, 0).mint("stable", "r1", Predicted(True, ["0", "1", "2"]), NOW)
    token = verify(KEYS, minted.token, NOW, 60)
    scores.score(token, ["0", 1, "0"])
    assert scores.labels == {("stable", "r1", "correct"): 2, ("stable", "r1", "incorrect"): 1}
    scores.pair(token, "r2", ["0", "0", "0"], ["0", 1, "0"])  # both right, stable only, candidate only
    assert scores.pairs == {("r2", "both_right"): 1, ("r2", "stable_only"): 1, ("r2", "candidate_only"): 1}
    values = verify(KEYS, Minter(KEYS, 0).mint("candidate", "r2", Predicted(False, [1.0, 3.0]), NOW).token, NOW, 60)
    scores.score(values, [2.0, 3.0])
    assert scores.abs_error[("candidate", "r2")] == 1.0 and scores.squared_error[("candidate", "r2")] == 1.0
    scores.pair(values, "r3", [2.5, 3.0], [2.0, 3.0])  # stable |1-2|=1 vs shadow 0.5: candidate closer; a tie
    assert scores.pairs[("r3", "candidate_only")] == 1 and scores.pairs[("r3", "both_right")] == 1
    assert scores.pair_abs_error == {("r3", "stable"): 1.0, ("r3", "candidate"): 0.5}


def test_regressor_errors_fill_the_histogram_on_the_contract_buckets() -> None:
    scores = Scores()
    minted = Minter(KEYS, 0).mint("candidate", "r2", Predicted(False, [10.0, 10.0, 10.0, 10.0]), NOW)
    token = verify(KEYS, minted.token, NOW, 60)
    scores.score(token, [10.0, 12.5, -30.0, 1e6])  # errors 0, 2.5 (on a bound: in that bucket), 40, 999990
    bounds = scores.abs_error_bounds
    assert bounds[:-1] == ABS_ERROR_BUCKETS[:-1] and bounds[-1] == math.inf
    counts = scores.abs_error_rows[("candidate", "r2")]
    assert sum(counts) == 4 and counts[-1] == 1  # beyond the last finite bound: +Inf
    assert counts[0] == 1 and counts[bounds.index(2.5)] == 1 and counts[bounds.index(50.0)] == 1
    assert scores.abs_error[("candidate", "r2")] == 0 + 2.5 + 40 + 999990
    classifier = verify(KEYS, Minter(KEYS, 0).mint("stable", "r1", Predicted(True, ["0"]), NOW).token, NOW, 60)
    scores.score(classifier, ["1"])
    assert ("stable", "r1") not in scores.abs_error_rows  # classifiers have no errors to bucket


def test_regressor_errors_are_also_summed_clipped_at_every_contract_bound() -> None:
    scores = Scores()
    minted = Minter(KEYS, 0).mint("stable", "r1", Predicted(False, [10.0, 10.0, 10.0]), NOW)
    token = verify(KEYS, minted.token, NOW, 60)
    scores.score(token, [10.0, 12.5, 1e6])  # errors 0, 2.5, 999990
    one = CLIP_BOUNDS.index(1.0)
    key = ("stable", "r1")
    assert scores.clipped_abs_error[key][one] == 0 + 1 + 1 and scores.clipped_squared_error[key][one] == 2
    top = len(CLIP_BOUNDS) - 1
    assert scores.clipped_abs_error[key][top] == 2.5 + 10000 and scores.clipped_squared_error[key][top] == 2.5**2 + 1e8
    # paired: stable's errors 1 and 20, the shadow's 3 and 0: clipped at 2.5 the differences are +1.5 and -2.5
    scores.pair(verify(KEYS, Minter(KEYS, 0).mint("stable", "r1", Predicted(False, [1.0, 20.0]), NOW).token, NOW,
                       60), "r2", [3.0, 0.0], [0.0, 0.0])  # fmt: skip
    at = CLIP_BOUNDS.index(2.5)
    assert scores.pair_clipped_abs_error[("r2", "stable")][at] == 1 + 2.5
    assert scores.pair_clipped_abs_error[("r2", "candidate")][at] == 2.5 + 0
    assert scores.pair_clipped_diff_squares["r2"][at] == 1.5**2 + 2.5**2
    assert scores.pair_diff_squares["r2"] == 2**2 + 20**2  # the raw sums are unchanged
    copy = scores.copy()
    copy.clipped_parts[key][0] += 1  # a copy to read on another thread shares no list
    assert copy.clipped_parts[key][0] != scores.clipped_parts[key][0]


@given(
    st.lists(
        st.tuples(st.floats(0, 2e4, allow_nan=False), st.floats(0, 2e4, allow_nan=False)), min_size=1, max_size=30
    ),
    st.sampled_from(CLIP_BOUNDS),
)
def test_clipped_sums_equal_the_direct_sums_at_every_bound(pairs: list[tuple[float, float]], bound: float) -> None:
    """The sums kept per interval and summed at scrape time are the sums of the clipped errors, including
    errors exactly on a bound and beyond the last."""
    scores = Scores()
    stable = verify(KEYS, Minter(KEYS, 0).mint("stable", "r1", Predicted(False, [0.0] * len(pairs)), NOW).token,
                    NOW, 60)  # fmt: skip
    labels = [e_s for e_s, _ in pairs]
    scores.score(stable, labels)
    scores.pair(stable, "r2", [e_s - e_c for e_s, e_c in pairs], labels)  # the shadow's error is e_c
    j = CLIP_BOUNDS.index(bound)
    clip_s = [min(abs(e_s), bound) for e_s, _ in pairs]
    clip_c = [min(abs(e_c), bound) for _, e_c in pairs]
    assert scores.clipped_abs_error[("stable", "r1")][j] == pytest.approx(sum(clip_s), rel=1e-9, abs=1e-9)
    assert scores.clipped_squared_error[("stable", "r1")][j] == pytest.approx(sum(c * c for c in clip_s), rel=1e-9)
    assert scores.pair_clipped_abs_error[("r2", "candidate")][j] == pytest.approx(sum(clip_c), rel=1e-9, abs=1e-6)
    direct = sum((c - s) ** 2 for s, c in zip(clip_s, clip_c, strict=True))
    assert scores.pair_clipped_diff_squares["r2"][j] == pytest.approx(direct, rel=1e-6, abs=1e-6)


def _feedback(tmp_path: Path, replica: int) -> Feedback:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(b"s" * 32).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=replica, port=8080, max_body=1000))


def test_a_replica_counts_labels_pairs_them_when_it_holds_the_shadow_and_refuses_replays(tmp_path: Path) -> None:
    mine = _feedback(tmp_path, replica=1)
    body, minted = mine.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    assert minted is not None and orjson.loads(body)["parameters"]["feedback_id"] == minted.token
    mine.shadow_answered(minted.nonce, "r2", WINE.replace(b"[1,2]", b"[0,2]"), now=NOW)
    label = orjson.dumps({"feedback_id": minted.token, "labels": [1, 2]})
    assert mine.receive(label, NOW) == Answer(202, {"counted": 2, "paired": True})
    assert mine.scores.pairs == {("r2", "stable_only"): 1, ("r2", "both_right"): 1}
    assert mine.scores.labels == {("stable", "r1", "correct"): 2}
    again = mine.receive(label, NOW)
    assert again == Answer(409, {"error": "this feedback_id was already counted", "reason": "replayed"})


def test_a_label_for_another_replicas_answer_goes_to_that_replica(tmp_path: Path) -> None:
    minter, other = _feedback(tmp_path, replica=1), _feedback(tmp_path, replica=2)
    _, minted = minter.stamp("stable", "r1", WINE, mirrored=True, now=NOW) or (b"", None)
    assert minted is not None
    outcome = other.receive(orjson.dumps({"feedback_id": minted.token, "labels": [1, 0]}), NOW)
    assert isinstance(outcome, Forward) and outcome.replica == 1 and outcome.feedback_id == minted.token
    # the minting replica is gone: the label is still counted, for stable alone, and says why
    counted = other.count(outcome.token, outcome.labels, NOW, unpaired="replica_gone")
    assert counted.body == {"counted": 2, "paired": False} and other.scores.unpaired == {"replica_gone": 1}
    _, plain = minter.stamp("candidate", "r2", WINE, mirrored=False, now=NOW) or (b"", None)
    assert plain is not None  # not mirrored: still counted where it was minted, whose replay cache it meets
    plain_label = orjson.dumps({"feedback_id": plain.token, "labels": [0, 1]})
    assert isinstance(other.receive(plain_label, NOW), Forward)
    answer = other.receive(orjson.dumps({"feedback_id": plain.token, "label": 0}), NOW)
    assert isinstance(answer, Answer) and answer.status == 400 and "1 labels for 2" in answer.body["error"]


def test_only_a_replica_can_say_a_label_was_forwarded(tmp_path: Path) -> None:
    """A client that sets the forwarding header itself (to have every replica count its label in turn)
    is forwarded like anyone else; the proof a replica attaches is accepted by the minting one."""
    minter, other = _feedback(tmp_path, replica=1), _feedback(tmp_path, replica=2)
    _, minted = other.stamp("candidate", "r2", WINE, mirrored=False, now=NOW) or (b"", None)
    assert minted is not None
    label = orjson.dumps({"feedback_id": minted.token, "labels": [1, 2]})
    for forged in (b"1", b"3:" + b"0" * 32, b"99999999:x", b":"):
        assert isinstance(minter.receive(label, NOW, forwarded=forged), Forward)
    proof = minter.forward_proof(minted.token)
    assert other.receive(label, NOW, forwarded=proof) == Answer(202, {"counted": 2, "paired": False})
    again = minter.receive(label, NOW)  # any copy later meets the minting replica's replay cache
    assert isinstance(again, Forward)
    assert other.receive(label, NOW, forwarded=proof).status == 409  # type: ignore[union-attr]


def test_refusals_have_a_status_and_a_counted_reason(tmp_path: Path) -> None:
    off = Feedback(FeedbackConfig(str(tmp_path / "no-keys")))
    assert off.stamp("stable", "r1", WINE, False, NOW) is None  # no keys: answers carry no id
    assert off.receive(b"{}", NOW, None) == Answer(404, {"error": "feedback is not enabled for this model",
                                                          "reason": "disabled"})  # fmt: skip
    on = _feedback(tmp_path, replica=1)
    assert on.receive(b"x" * 1001, NOW, None).status == 413  # type: ignore[union-attr]
    assert on.receive(b"{not json", NOW, None).status == 400  # type: ignore[union-attr]
    expired = Minter(FeedbackKeys({3: b"s" * 32}), 1).mint("stable", "r1", Predicted(True, ["0"]), NOW - 8 * 86400)
    assert on.receive(orjson.dumps({"feedback_id": expired.token, "label": 0}), NOW, None).status == 410  # type: ignore[union-attr]
    assert on.scores.refused == {"too_large": 1, "malformed": 1, "expired": 1}


def test_a_regression_label_that_is_not_finite_within_float32_is_refused_naming_its_row() -> None:
    minted = Minter(KEYS, 0).mint("stable", "r1", Predicted(False, [1.0, 2.0]), NOW)
    for bad in (math.nan, math.inf, -math.inf, 1e300):
        with pytest.raises(TokenError, match="row 1") as refused:
            check(KEYS, {"feedback_id": minted.token, "labels": [1.0, bad]}, NOW, 60)
        assert refused.value.reason == "labels" and "finite" in str(refused.value)
    assert check(KEYS, {"feedback_id": minted.token, "labels": [-3.4e38, 3.4e38]}, NOW, 60)[1] == [-3.4e38, 3.4e38]


def test_a_feedback_body_with_a_huge_label_is_a_400_and_counts_nothing(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path, replica=0)
    stamped = feedback.stamp("stable", "r1", b'{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[2.5]}]}',
                             mirrored=False, now=NOW)  # fmt: skip
    assert stamped is not None and stamped[1] is not None
    body = b'{"feedback_id":"%s","label":1e300}' % stamped[1].token.encode()
    answer = feedback.receive(body, NOW)
    assert isinstance(answer, Answer) and answer.status == 400 and "row 0" in answer.body["error"]
    assert feedback.scores.abs_error == {} and feedback.scores.refused == {"labels": 1}
