"""The model server's predictions header between real processes (a wine model server, a gateway with feedback
keys): the server sends it, the gateway signs it and never passes it on, and a client that sends a header of
that name on its request changes nothing (it is a response header of upstreams only; contract.predicted)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.component.gateway.gateway_helpers import RouteFile, feedback_keys, gateway, infer_body, request, table
from tests.support.models import wine
from tests.support.procs import serve_model

from mlrollout_serving.contract.feedback import FeedbackKeys, verify
from mlrollout_serving.contract.predicted import PREDICTED_HEADER, Predicted, header_value, read_header
from mlrollout_serving.gateway.feedback import load_keys

pytestmark = pytest.mark.component

INFER = "/v2/models/wine/infer"


def test_the_gateway_signs_the_servers_header_drops_it_and_ignores_a_clients(tmp_path: Path) -> None:
    model = wine()
    keys_file = feedback_keys(tmp_path)
    keys = load_keys(str(keys_file))
    assert isinstance(keys, FeedbackKeys)
    forged = header_value(Predicted(True, ["7"] * 3, 9), True)  # three rows of a class the model does not have
    assert forged is not None
    with serve_model(model, name="wine") as server:
        routes = RouteFile(tmp_path)
        routes.write(table(1, server.url))
        with gateway(routes, "--feedback-keys", str(keys_file), model_deployment="wine") as gw:
            for row in range(6):
                body = infer_body([model.samples[row].tolist()])
                direct = request(server.url + INFER, body)
                sent = direct.headers.get(PREDICTED_HEADER)
                assert sent is not None and read_header(sent.encode(), 64) is not None  # the server sends it
                truth = str(direct.body["outputs"][0]["data"][0])
                for headers in ({}, {PREDICTED_HEADER: forged.decode()}):
                    answer = request(gw.url + INFER, body, headers=headers)
                    assert answer.status == 200
                    assert PREDICTED_HEADER not in answer.headers  # never passed on to a client
                    feedback_id = answer.body["parameters"]["feedback_id"]
                    assert feedback_id == answer.headers["x-mlrollout-feedback-id"]
                    token = verify(keys, feedback_id, int(time.time()), 60)
                    assert (token.predictions, token.class_count, token.truncated) == ((truth,), 3, False)
                    answer.body.pop("parameters")
                    assert answer.body == direct.body  # the model's answer, the id spliced in
