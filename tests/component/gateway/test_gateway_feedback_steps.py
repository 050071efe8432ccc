"""Labels count in the step that served their answer, through real processes: two gateway replicas reading one
route file, real wine model servers, a client sending labels back (to the replica that did not answer, so
each label is forwarded to the one that did, which decides).

A 10 % canary step, then the operator's table for the 50 % step (its ``stepStartedAt``): a late label for an
answer served in the 10 % step is accepted (202, ``counted: 0``) and not scored, counted in
``feedback_rows_uncounted_total{reason="served_before_step"}``; labels for the 50 % step's answers are scored;
a table without a step start (the rollout over, or an older operator) counts every label again.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.component.gateway.gateway_helpers import (
    Answer,
    RouteFile,
    feedback_keys,
    gateway,
    infer_body,
    metric_sum,
    request,
    table,
)
from tests.support.models import BuiltModel
from tests.support.procs import ManagedProcess, ServerProcess, free_port
from tests.support.waiting import wait_for

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract.feedback import SERVED_BEFORE_STEP

pytestmark = pytest.mark.component

REPLICAS = ("127.0.0.2", "127.0.0.3")
PER_STEP = 60


@contextlib.contextmanager
def _replicas(routes: RouteFile, workdir: Path) -> Iterator[list[ManagedProcess]]:
    port, flags = free_port(), ("--feedback-keys", str(feedback_keys(workdir)))
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                gateway(routes, *flags, "--pod-ip", host, host=host, port=port, model_deployment="wine")
            )
            for host in REPLICAS
        ]


def _apply(routes: RouteFile, replicas: list[ManagedProcess], body: dict[str, Any], version: int) -> None:
    routes.write(body)

    def applied() -> bool:
        return all(metric_sum(r.url, contract.GATEWAY_ROUTE_VERSION.name) == version for r in replicas)

    wait_for(applied, what=f"route table {version} applied by every replica")


def _serve(replicas: list[ManagedProcess], model: BuiltModel, count: int) -> list[tuple[Answer, int, int]]:
    """``count`` answers, alternately from each replica: (answer, true class, the answering replica)."""
    out = []
    for i in range(count):
        row = i % len(model.samples)
        answer = request(f"{replicas[i % 2].url}/v2/models/wine/infer", infer_body(model.samples[row : row + 1]))
        assert answer.status == 200, answer.body
        out.append((answer, int(model.sample_targets[row]), i % 2))
    return out


def _label(replicas: list[ManagedProcess], served: tuple[Answer, int, int]) -> Answer:
    answer, truth, minted_by = served
    other = replicas[1 - minted_by]  # forwarded to the minting replica, which counts by its own table
    return request(f"{other.url}/v2/models/wine/feedback", {"feedback_id": answer.headers["x-mlrollout-feedback-id"],
                                                              "label": truth})  # fmt: skip


def _total(replicas: list[ManagedProcess], series: str, **labels: str) -> float:
    return sum(metric_sum(r.url, series, **labels) for r in replicas)


def test_a_late_label_for_an_answer_served_before_the_step_is_accepted_counted_and_not_scored(
    wine_model: BuiltModel, wine_stable: ServerProcess, wine_candidate: ServerProcess, tmp_path: Path
) -> None:
    routes = RouteFile(tmp_path)
    step_10 = table(1, wine_stable.url, wine_candidate.url, weight=10, stepStartedAt=time.time() - 60)
    routes.write(step_10)
    with _replicas(routes, tmp_path) as replicas:
        in_10 = _serve(replicas, wine_model, PER_STEP)
        on_time, late, after_rollout = in_10[:20], in_10[20:40], in_10[40:]
        for served in on_time:  # labelled while the 10 % step runs: scored
            got = _label(replicas, served)
            assert (got.status, got.body) == (202, {"counted": 1, "paired": False}), got.body

        start = math.ceil(time.time()) + 1.0  # a whole second after every answer of the 10 % step
        step_50 = table(2, wine_stable.url, wine_candidate.url, weight=50, stepStartedAt=start)
        _apply(routes, replicas, step_50, 2)
        wait_for(lambda: time.time() >= start, what="the 50 % step's start")
        in_50 = _serve(replicas, wine_model, PER_STEP)
        assert {a.version for a, _, _ in in_50} == {2}

        for served in late:  # the 10 % step's answers, labelled during the 50 % step: accepted, not scored
            got = _label(replicas, served)
            assert (got.status, got.body) == (
                202, {"counted": 0, "paired": False, "uncounted": 1, "reason": SERVED_BEFORE_STEP}
            ), got.body  # fmt: skip
        for served in in_50:
            got = _label(replicas, served)
            assert (got.status, got.body) == (202, {"counted": 1, "paired": False}), got.body
        again = _label(replicas, late[0])  # its id was consumed: a copy is a replay, not a second count
        assert (again.status, again.body.get("reason")) == (409, "replayed")

        scored = contract.GATEWAY_FEEDBACK_LABELS.name
        uncounted = contract.GATEWAY_FEEDBACK_UNCOUNTED.name
        assert _total(replicas, scored) == len(on_time) + len(in_50)
        assert _total(replicas, uncounted) == len(late)
        by_track = Counter(a.track for a, _, _ in late)
        for track, n in by_track.items():  # each track's lost labels show, under the token's revision
            assert _total(replicas, uncounted, track=track, reason=SERVED_BEFORE_STEP, revision=f"rev-{track}") == n
        # the replica that minted each late answer counted it (the forwarded label met its table)
        for i, replica in enumerate(replicas):
            assert metric_sum(replica.url, uncounted) == sum(1 for _, _, m in late if m == i)

        _apply(routes, replicas, table(3, wine_stable.url), 3)  # the rollout is over: no step start
        for served in after_rollout:
            assert _label(replicas, served).body == {"counted": 1, "paired": False}
        assert _total(replicas, scored) == len(on_time) + len(in_50) + len(after_rollout)
        assert _total(replicas, uncounted) == len(late)
