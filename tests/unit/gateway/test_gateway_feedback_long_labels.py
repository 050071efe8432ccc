"""Class labels longer than a token carries (MAX_LABEL_BYTES of UTF-8): never cut, since a label is scored by
equality with the prediction (a cut one would score the right label as wrong, and a cut inside a character
would not verify); the rows from the first such label on are left out of the id, as rows beyond the bound
are, and the answer says how many rows can be labelled (``feedback_rows``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from tests.support.feedback_samples import KEY, KEYS, NOW

from mlrollout_serving.contract.feedback import MAX_LABEL_BYTES, Token, carried_rows, mint, verify
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
    params = orjson.loads(answer)["parameters"]
    assert (minted.rows, minted.truncated, params["feedback_rows"]) == (2, True, 2)
    token = verify(KEYS, params["feedback_id"], NOW, 60)  # verifies: nothing was cut inside a character
    assert token.predictions == ("0", FITS) and token.truncated
    counted = feedback.receive(orjson.dumps({"feedback_id": params["feedback_id"], "labels": ["0", FITS]}), NOW)
    assert isinstance(counted, Answer) and counted.status == 202, counted
    scores, _ = feedback.snapshot()
    assert scores.labels == {("stable", "r1", "correct"): 2}  # the long label equals what was served


def test_a_one_row_answer_with_a_too_long_label_says_no_row_can_be_labelled(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    body, header = _served([CROSSES])
    assert header is None
    stamped = feedback.stamp("stable", "r1", body, False, NOW, None)
    assert stamped is not None
    params = orjson.loads(stamped[0])["parameters"]
    assert params["feedback_rows"] == 0 and verify(KEYS, params["feedback_id"], NOW, 60).predictions == ()
    refused: Any = feedback.receive(orjson.dumps({"feedback_id": params["feedback_id"], "label": CROSSES}), NOW)
    assert (refused.status, refused.body["reason"]) == (400, "labels"), refused
    scores, _ = feedback.snapshot()
    assert not scores.labels  # neither correct nor incorrect: a row the id does not carry is never scored
