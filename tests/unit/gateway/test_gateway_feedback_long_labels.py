"""Class labels longer than a token carries (MAX_LABEL_BYTES of UTF-8): never cut, since a label is scored by
equality with the prediction (a cut one would score the right label as wrong, and a cut inside a character
would not verify); the rows from the first such label on are left out of the id, as rows beyond the bound
are, and the answer says how many rows can be labelled (``feedback_rows``). An answer whose first label is
that long gets no id at all, and says ``feedback_rows: 0``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from tests.support.feedback_samples import KEY, KEYS, NOW

from mlrollout_serving.contract.feedback import MAX_LABEL_BYTES, Token, carried_rows, mint, verify
from mlrollout_serving.contract.predicted import Predicted
from mlrollout_serving.gateway.feedback import Answer, Feedback, FeedbackConfig
from mlrollout_serving.server.codec import encode_infer, predicted_header
from mlrollout_serving.server.signature import TensorSpec

FITS = "\u00e9" * (MAX_LABEL_BYTES // 2)  # 254 bytes of two-byte characters: the longest label carried
CROSSES = "a" + FITS  # 255 bytes: a cut at 254 would split its last character


def _feedback(tmp_path: Path) -> Feedback:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(KEY).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=7, max_rows=8))


def _served(labels: list[str]) -> tuple[bytes, str | None]:
    """The model server's answer with these string labels, and its predictions header."""
    spec = TensorSpec("label", "BYTES", np.dtype(object), (None,))
    outputs = [(spec, np.array([label.encode() for label in labels], dtype=object), False)]
    return encode_infer("names", "1", None, outputs).body, predicted_header(outputs)


def test_a_label_of_the_limit_in_multibyte_characters_round_trips_and_a_longer_one_is_refused() -> None:
    assert len(FITS.encode()) == MAX_LABEL_BYTES and len(CROSSES.encode()) == MAX_LABEL_BYTES + 1
    back = verify(KEYS, mint(KEYS, Token("stable", "r1", NOW, 1, 0, ("0", FITS), classes=True)), NOW, 60)
    assert back.predictions == ("0", FITS)
    for predictions in ((CROSSES,), ("0", CROSSES)):  # the one-label path and the general one
        with pytest.raises(ValueError, match="carried_rows"):
            mint(KEYS, Token("stable", "r1", NOW, 2, 0, predictions, classes=True))
    assert carried_rows(True, ["0", None, FITS, CROSSES, "1"]) == 3
    assert carried_rows(True, ["x" * 63, 7, None]) == 3
    assert carried_rows(False, [1.0, 2.0]) == 2


def test_rows_from_a_too_long_label_on_cannot_be_labelled_and_the_others_score_as_served(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    body, header = _served(["0", FITS, CROSSES, "1"])
    assert header is None  # the model server sends no header it cannot pack: the gateway reads the answer
    stamped = feedback.stamp("stable", "r1", body, False, NOW, None)
    assert stamped is not None
    answer, minted = stamped
    assert minted is not None
    params = orjson.loads(answer)["parameters"]
    assert (minted.rows, minted.truncated, params["feedback_rows"]) == (2, True, 2)
    token = verify(KEYS, params["feedback_id"], NOW, 60)  # verifies: nothing was cut inside a character
    assert token.predictions == ("0", FITS) and token.truncated
    counted = feedback.receive(orjson.dumps({"feedback_id": params["feedback_id"], "labels": ["0", FITS]}), NOW)
    assert isinstance(counted, Answer) and counted.status == 202, counted
    scores, _ = feedback.snapshot()
    assert scores.labels == {("stable", "r1", "correct"): 2}  # the long label equals what was served


@pytest.mark.parametrize("labels", [[CROSSES], [CROSSES, "0", FITS], ["x" * 1000]])
def test_an_answer_whose_first_label_is_too_long_gets_no_id_and_says_no_row_can_be_labelled(
    tmp_path: Path, labels: list[str]
) -> None:
    """No row can be labelled: no id is minted (one would only ever be refused), and the answer says
    ``feedback_rows: 0`` where an id's answer says how many rows it can label; the rest as the model sent it."""
    feedback = _feedback(tmp_path)
    body, header = _served(labels)
    assert header is None
    assert feedback.minter is not None
    before = next(feedback.minter._nonces)
    stamped = feedback.stamp("stable", "r1", body, True, NOW, None)
    assert stamped is not None
    answer, minted = stamped
    assert minted is None  # no id: the proxy then sends no x-mlrollout-feedback-id and pairs no shadow answer
    assert answer == body[:-1] + b',"parameters":{"feedback_rows":0}}'  # the model's bytes, in place
    assert orjson.loads(answer) == {**orjson.loads(body), "parameters": {"feedback_rows": 0}}
    assert next(feedback.minter._nonces) == before + 1  # no nonce was spent on it
    scores, _ = feedback.snapshot()
    assert not scores.labels and not scores.refused


def test_an_answer_with_parameters_whose_first_label_is_too_long_gets_feedback_rows_merged(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    body, _ = _served([CROSSES])
    answer = orjson.loads(body)
    answer["parameters"] = {"theirs": 1, "feedback_id": "not ours"}
    stamped = feedback.stamp("stable", "r1", orjson.dumps(answer), False, NOW, None)
    assert stamped is not None and stamped[1] is None
    assert orjson.loads(stamped[0])["parameters"] == {"theirs": 1, "feedback_rows": 0}  # no id, not even theirs


def test_a_rescued_answer_scoring_an_own_answer_whose_first_label_is_too_long_gets_no_id(tmp_path: Path) -> None:
    """The low-confidence answer the candidate gave (not served) cannot be carried: no id, as for an answer
    served as it came; a rescue of a *failed* request still gets one (its rows have no prediction to carry)."""
    feedback = _feedback(tmp_path)
    served, _ = _served(["0"])
    own, _ = _served([CROSSES])
    stamped = feedback.stamp_rescued("candidate", "r2", served, own, NOW)
    assert stamped is not None and stamped[1] is None
    assert stamped[0] == served[:-1] + b',"parameters":{"feedback_rows":0}}'
    failed = feedback.stamp_rescued("candidate", "r2", served, None, NOW)
    assert failed is not None and failed[1] is not None and failed[1].rows == 1


def test_minting_an_id_no_row_of_fits_in_raises(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    assert feedback.minter is not None
    with pytest.raises(ValueError, match="first class label is too long"):
        feedback.minter.mint("stable", "r1", Predicted(True, [CROSSES, "0"]), NOW)
    assert feedback.minter.mint_carried("stable", "r1", Predicted(True, [CROSSES, "0"]), NOW) is None
