"""The gateway in front of real model servers with real ONNX models: split, stickiness, shadow, confidence."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import chisquare
from tests.component.gateway.gateway_helpers import (
    BODY,
    INFER,
    Proc,
    RouteFile,
    control,
    gateway,
    infer_body,
    load,
    memory_kib,
    metric_samples,
    metric_sum,
    request,
    table,
)
from tests.support.httpd import silent_listener
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess
from tests.support.waiting import wait_for

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

WINE = "/v2/models/wine/infer"
SERVER_REQUESTS = contract.MODEL_REQUESTS.name
P_MIN = 0.001  # a correct split fails this by chance once in a thousand runs


def _bodies(model: BuiltModel, rows: int = 1) -> list[dict[str, object]]:
    samples = model.samples
    return [infer_body(samples[i : i + rows]) for i in range(0, len(samples) - rows + 1)]


@pytest.mark.parametrize("weight", [30.0, 5.0])
def test_weighted_split_matches_the_weights(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_candidate: ServerProcess,
    weight: float,
) -> None:  # fmt: skip
    routes.write(table(1, wine_stable.url, wine_candidate.url, weight))
    n = 1500
    before = {t: metric_sum(s.url, SERVER_REQUESTS, code="200") for t, s in
              (("stable", wine_stable), ("candidate", wine_candidate))}  # fmt: skip
    with gateway(routes) as gw:
        result = load(gw.url + WINE, _bodies(wine_model), count=n, concurrency=8)
        assert result.failed == 0, result
        observed = [result.tracks.get("stable", 0), result.tracks.get("candidate", 0)]
        expected = [n * (100 - weight) / 100, n * weight / 100]
        stat, p = chisquare(observed, expected)
        print(f"weight {weight}%: observed {observed}, expected {expected}, chi2 {stat:.2f}, p {p:.3f}")
        assert p > P_MIN
        # the servers saw exactly what the track header claims
        for track, server in (("stable", wine_stable), ("candidate", wine_candidate)):
            assert metric_sum(server.url, SERVER_REQUESTS, code="200") - before[track] == result.tracks[track]
        served = metric_sum(
            gw.url, "mlrollout_gateway_requests_total", track="candidate", revision="rev-candidate",
            code="200", namespace="test-ns", model_deployment="iris",
        )  # fmt: skip
        assert served == result.tracks["candidate"]


@pytest.mark.parametrize(("weight", "only"), [(0.0, "stable"), (100.0, "candidate")])
def test_zero_and_hundred_percent_are_exact(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_candidate: ServerProcess,
    weight: float, only: str,
) -> None:  # fmt: skip
    routes.write(table(1, wine_stable.url, wine_candidate.url, weight))
    with gateway(routes) as gw:
        result = load(gw.url + WINE, _bodies(wine_model), count=400, concurrency=8)
        assert result.failed == 0 and result.tracks == {only: 400}


def test_sticky_ab_is_deterministic_across_restarts_and_matches_weights(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_candidate: ServerProcess
) -> None:
    ab = table(1, wine_stable.url, wine_candidate.url, 40.0)
    routes.write({**ab, "mode": "ab", "sticky": {"header": "x-user"}})
    users = [{"x-user": f"user-{i}"} for i in range(600)]
    bodies = _bodies(wine_model)

    def assignment(url: str) -> dict[str, str]:
        seen: dict[str, set[str]] = {}
        for _ in range(2):
            for i in range(0, len(users), 60):
                for u in users[i : i + 60]:
                    answer = request(url + WINE, bodies[hash(u["x-user"]) % len(bodies)], headers=u)
                    assert answer.status == 200
                    seen.setdefault(u["x-user"], set()).add(answer.track)
        assert all(len(tracks) == 1 for tracks in seen.values()), "a user moved between tracks"
        return {user: tracks.pop() for user, tracks in seen.items()}

    with gateway(routes) as gw:
        first = assignment(gw.url)
    with gateway(routes) as gw:  # a new process (another replica, or after a restart)
        second = assignment(gw.url)
    assert first == second
    counts = Counter(first.values())
    stat, p = chisquare([counts["stable"], counts["candidate"]], [600 * 0.6, 600 * 0.4])
    print(f"sticky users per track {dict(counts)}, chi2 {stat:.2f}, p {p:.3f}")
    assert p > P_MIN


def test_sticky_json_field(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_candidate: ServerProcess
) -> None:
    ab = table(1, wine_stable.url, wine_candidate.url, 50.0)
    routes.write({**ab, "mode": "ab", "sticky": {"jsonField": "parameters.user_id"}})
    with gateway(routes) as gw:
        for user in range(40):
            body = {**infer_body(wine_model.samples[:1]), "parameters": {"user_id": user}}
            tracks = {request(gw.url + WINE, body).track for _ in range(3)}
            assert len(tracks) == 1


def test_shadow_is_invisible_to_clients_counted_and_compared(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_shadow: ServerProcess
) -> None:
    mirror = {"upstream": wine_shadow.url, "revision": "r-shadow", "percent": 100}
    routes.write(table(1, wine_stable.url, mirror=mirror))
    bodies = _bodies(wine_model, rows=4)
    direct = [request(wine_stable.url + WINE, b).body["outputs"] for b in bodies]
    shadow_before = metric_sum(wine_shadow.url, SERVER_REQUESTS, code="200")
    with gateway(routes) as gw:
        answers = [request(gw.url + WINE, b) for b in bodies]
        assert {(a.status, a.track) for a in answers} == {(200, "stable")}
        assert [a.body["outputs"] for a in answers] == direct  # exactly stable's answer, never the shadow's
        n, rows = len(bodies), 4 * len(bodies)
        wait_for(lambda: metric_sum(gw.url, "mlrollout_gateway_mirrored_requests_total", track="shadow",
                                    revision="r-shadow") == n, what="mirrored count")  # fmt: skip
        assert metric_sum(wine_shadow.url, SERVER_REQUESTS, code="200") - shadow_before == n
        agreement = "mlrollout_gateway_shadow_agreement_total"
        wait_for(lambda: metric_sum(gw.url, agreement, output="label") == rows, what="agreement of every row")
        agree = metric_sum(gw.url, agreement, output="label", result="agree")
        disagree = metric_sum(gw.url, agreement, output="label", result="disagree")
        expected_agree = sum(
            a == b
            for d, body in zip(direct, bodies, strict=True)
            for a, b in zip(d[0]["data"], request(wine_shadow.url + WINE, body).body["outputs"][0]["data"], strict=True)
        )  # fmt: skip
        print(f"shadow label agreement: {agree:.0f} agree, {disagree:.0f} disagree over {rows} rows")
        assert agree == expected_agree and disagree == rows - expected_agree
        assert disagree > 0  # the shuffled-label model really disagrees: the metric is not trivially 'agree'
        assert metric_sum(gw.url, agreement, output="probabilities") == rows
        assert metric_sum(gw.url, "mlrollout_gateway_mirror_dropped_total") == 0


def test_regressor_shadow_records_absolute_differences(
    routes: RouteFile, diabetes_model: BuiltModel, diabetes_pair: tuple[ServerProcess, ServerProcess]
) -> None:
    stable, shadow = diabetes_pair
    routes.write(table(1, stable.url, mirror={"upstream": shadow.url, "revision": "r-shadow", "percent": 100}))
    bodies = _bodies(diabetes_model, rows=2)[:20]
    with gateway(routes) as gw:
        for body in bodies:
            assert request(gw.url + "/v2/models/diabetes/infer", body).status == 200
        name = "mlrollout_gateway_shadow_abs_difference_count"
        wait_for(lambda: metric_sum(gw.url, name, output="variable") == 40, what="40 differences")
        # same model on both sides: every difference is in the smallest bucket
        small = metric_sum(gw.url, "mlrollout_gateway_shadow_abs_difference_bucket", output="variable", le="1e-06")
        assert small == 40


def test_slow_shadow_is_dropped_and_never_slows_clients(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, up_a: Proc
) -> None:
    control(up_a, delay=3.0)
    mirror = {"upstream": up_a.url, "percent": 100, "queueSize": 2, "timeoutSeconds": 0.3, "concurrency": 1}
    routes.write(table(1, wine_stable.url, mirror=mirror))
    with gateway(routes) as gw:
        result = load(gw.url + WINE, _bodies(wine_model), count=100, concurrency=4)
        assert result.failed == 0 and result.tracks == {"stable": 100}
        dropped = "mlrollout_gateway_mirror_dropped_total"
        sent = "mlrollout_gateway_mirrored_requests_total"

        def settled() -> bool:
            n_sent, full = metric_sum(gw.url, sent), metric_sum(gw.url, dropped, reason="queue_full")
            return bool(n_sent + full == 100 and n_sent == metric_sum(gw.url, dropped, reason="timeout"))

        wait_for(settled, what="every copy either dropped from the full queue or timed out")
        full = metric_sum(gw.url, dropped, reason="queue_full")
        print(f"mirror: sent {metric_sum(gw.url, sent):.0f}, queue_full {full:.0f}")
        assert full > 0


def test_a_hanging_shadow_and_large_bodies_cannot_grow_the_gateway_past_the_byte_cap(
    routes: RouteFile, up_a: Proc
) -> None:
    """48 copies of 4 MiB bodies would hold 192 MiB while the shadow hangs (1024 x 64 MiB with the
    defaults): the mirror queue's 64 MiB byte cap drops the excess as queue_full and the peak RSS stays
    bounded; every client is answered."""
    with silent_listener() as shadow:
        mirror = {"upstream": shadow, "percent": 100, "queueSize": 1024, "timeoutSeconds": 60, "concurrency": 1}
        routes.write(table(1, up_a.url, mirror=mirror))
        with gateway(routes) as gw:
            assert request(gw.url + INFER, BODY).status == 200
            before = memory_kib(gw)
            big = {**BODY, "pad": "x" * (4 << 20)}
            statuses = Counter(request(gw.url + INFER, big).status for _ in range(48))
            assert statuses == {200: 48}
            dropped = "mlrollout_gateway_mirror_dropped_total"
            wait_for(lambda: metric_sum(gw.url, dropped, reason="queue_full") >= 48 - 64 // 4,
                     what="copies over the 64 MiB cap dropped")  # fmt: skip
            grown = (memory_kib(gw) - before) >> 10
            print(f"mirror: queue_full {metric_sum(gw.url, dropped, reason='queue_full'):.0f}, peak RSS +{grown} MiB")
            assert grown < 128


def test_low_confidence_answers_take_the_configured_action(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_candidate: ServerProcess
) -> None:
    bodies = _bodies(wine_model)
    tops = [max(request(wine_candidate.url + WINE, b).body["outputs"][1]["data"]) for b in bodies]
    threshold = sorted(tops)[len(tops) // 2]  # the median: about half the answers are "low confidence"
    expected_low = sum(1 for t in tops if t < threshold)
    assert 0 < expected_low < len(bodies)
    fallback = {"confidenceThreshold": threshold, "lowConfidenceAction": {"action": "stable"}}
    routes.write(table(1, wine_stable.url, wine_candidate.url, 100, fallback=fallback))
    with gateway(routes) as gw:
        answers = [request(gw.url + WINE, b) for b in bodies]
        assert sum(1 for a in answers if a.track == "stable") == expected_low
        assert all(a.status == 200 for a in answers)
        assert metric_sum(gw.url, "mlrollout_gateway_fallbacks_total", track="candidate",
                          reason="low_confidence", action="stable") == expected_low  # fmt: skip
        # routed to the candidate, answered by stable: once each, so the analysis can move them back
        assert metric_sum(gw.url, "mlrollout_gateway_fallback_requests_total", track="candidate",
                          reason="low_confidence", answered="stable") == expected_low  # fmt: skip


def test_killed_model_server_falls_back_to_stable(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, wine_worse_model: BuiltModel
) -> None:
    from tests.support.procs import start_server

    doomed = start_server(wine_worse_model, name="wine")
    try:
        routes.write(table(1, wine_stable.url, doomed.url, 100, fallback={"chain": [{"action": "stable"}]}))
        with gateway(routes) as gw:
            assert request(gw.url + WINE, _bodies(wine_model)[0]).track == "candidate"
            doomed.proc.kill()
            doomed.proc.wait(10)
            result = load(gw.url + WINE, _bodies(wine_model), count=50, concurrency=4)
            assert result.failed == 0 and result.tracks == {"stable": 50}
            assert metric_sum(gw.url, "mlrollout_gateway_fallbacks_total", track="candidate", action="stable") == 50
    finally:
        doomed.stop()
        doomed.log_path.unlink(missing_ok=True)


def test_metrics_carry_identity_labels(routes: RouteFile, wine_stable: ServerProcess) -> None:
    routes.write(table(3, wine_stable.url))
    with gateway(routes) as gw:
        request(gw.url + WINE, {"inputs": []})  # a 400 from the server passes through as is
        for name, labels, _ in metric_samples(gw.url):
            if name.startswith("mlrollout_gateway_"):
                assert labels["namespace"] == "test-ns" and labels["model_deployment"] == "iris", (name, labels)
                assert "track" in labels and "revision" in labels
        assert metric_sum(gw.url, "mlrollout_gateway_requests_total", code="400", track="stable") == 1


def test_backup_model_is_asked_by_the_model_name_it_serves(
    routes: RouteFile, up_a: Proc, wine_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    """A backup ModelDeployment named `wine-lite` whose server serves model `wine`: the request path must
    carry `wine` (modelName), not the deployment's name, or the backup answers 400 (unknown model)."""
    body = infer_body(wine_model.samples[:1])
    control(up_a, status=500)  # the only track fails on every request

    def backup_table(version: int, **backup: str) -> dict[str, object]:
        step = {"action": "backup", "backup": {"name": "wine-lite", "upstream": wine_stable.url, **backup}}
        return table(version, up_a.url, fallback={"chain": [step]})

    routes.write(backup_table(1))
    with gateway(routes) as gw:
        wrong = request(gw.url + "/v2/models/iris/infer", body)
        assert (wrong.status, wrong.track) == (400, "backup")
        assert "unknown model 'wine-lite'" in wrong.body["error"]
        routes.write(backup_table(2, modelName="wine"))
        wait_for(lambda: metric_sum(gw.url, "mlrollout_gateway_route_table_version") == 2, what="table version 2")
        answer = request(gw.url + "/v2/models/iris/versions/7/infer", body)
        assert (answer.status, answer.track, answer.body["model_name"]) == (200, "backup", "wine")
        direct = request(wine_stable.url + WINE, body)
        assert answer.body["outputs"] == direct.body["outputs"]
