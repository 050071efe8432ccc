"""Batched looks (analysis/batch.py): unions split back exactly, rounds find every query, failures fail
the looks they touch, and the snapshots equal those of looks taken one by one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlrollout.analysis import AnalysisTarget, Measurement, Sample, StaticProvider, collect_snapshot
from mlrollout.analysis.batch import MEMBER_LABEL, LookRequest, ask_all, collect_snapshots, split, union
from mlrollout.analysis.queries import BuiltIn
from mlrollout.analysis.snapshot import Split
from mlrollout.api.rolloutpolicy import CustomMetric

MEMBER = re.compile(r'label_replace\(((?:(?!label_replace\().)*?), "' + MEMBER_LABEL + r'", "(\d+)", "", ""\)')


def series_answer(promql: str) -> Measurement:
    """A healthy pair whose counts depend on the ModelDeployment, the track and the window, so a row read
    back by the wrong look would show; labelled pairs exist (the second round asks their details)."""
    md = re.search(r'model_deployment="md-(\d+)"', promql)
    track = re.search(r'track="(\w+)"', promql)
    window = re.search(r"offset (\d+)s", promql)
    scale = (1 + int(md.group(1)) if md else 1) * (9 if track and track.group(1) == "stable" else 1)
    base = float(window.group(1)) if window else 1.0
    if "duration" in promql and promql.startswith("sum by (le)"):
        return Measurement(tuple(Sample({"le": le}, v * scale) for le, v in (("0.05", 50.0), ("+Inf", base))))
    if "feedback_pairs_total" in promql:
        return Measurement((Sample({"result": "both_right"}, 5.0 * scale), Sample({"result": "stable_only"}, 2.0)))
    if "feedback_pair_abs_error" in promql and "clipped" not in promql:
        return Measurement((Sample({"side": "stable"}, 1.5 * scale), Sample({"side": "candidate"}, 2.5)))
    if "5.." in promql:
        return Measurement((Sample({}, 2.0 * scale),))
    if "requests_total" in promql:
        return Measurement((Sample({}, base * scale),))
    if promql.startswith("custom_metric"):
        return Measurement((Sample({}, 7.0),))
    return Measurement()


@dataclass
class UnionAwareProvider:
    """Answers a union the way Prometheus does: each member's rows, tagged with its member label."""

    fail: str | None = None
    requests: list[str] = field(default_factory=list)

    def query(self, promql: str, at: float | None = None) -> Measurement:
        self.requests.append(promql)
        if self.fail is not None:
            return Measurement(error=self.fail)
        members = MEMBER.findall(promql)
        if not members:
            return series_answer(promql)
        rows = []
        for inner, index in members:
            for s in series_answer(inner).samples:
                rows.append(Sample({**s.labels, MEMBER_LABEL: index}, s.value))
        return Measurement(tuple(rows))


def target(i: int, **kw: object) -> AnalysisTarget:
    return AnalysisTarget("team-a", f"md-{i}", "r1", "r2", **kw)  # type: ignore[arg-type]


def looks() -> list[LookRequest]:
    custom = (CustomMetric(name="queue", query='custom_metric{track="{{track}}"}', max=5),)
    return [
        LookRequest(target(0, split=Split(0.9, 0.1)), 120.0),
        LookRequest(target(1, source="model"), 300.0, quality=True),
        LookRequest(target(2), 45.0, custom=custom),
        LookRequest(target(3, source="model"), 600.0),
    ]


def test_union_tags_every_member_and_split_reads_them_back() -> None:
    queries = [f"sum(x{i})" for i in range(5)]
    text = union(queries)
    assert [(q, int(i)) for q, i in MEMBER.findall(text)] == [(q, i) for i, q in enumerate(queries)]
    assert text.count(" or ") == 4
    answer = Measurement((Sample({"le": "1", MEMBER_LABEL: "3"}, 2.0), Sample({MEMBER_LABEL: "0"}, 1.0)))
    parts = split(answer, 5)
    assert parts[0] == Measurement((Sample({}, 1.0),))
    assert parts[3] == Measurement((Sample({"le": "1"}, 2.0),))
    assert parts[1].no_data and parts[2].no_data and parts[4].no_data


def test_split_of_a_failed_or_foreign_answer_fails_every_member() -> None:
    assert [m.error for m in split(Measurement(error="down"), 3)] == ["down"] * 3
    foreign = split(Measurement((Sample({"job": "x"}, 1.0),)), 2)
    assert all(m.error is not None and "without a member" in m.error for m in foreign)


def test_ask_all_unions_built_in_queries_asks_others_alone_and_once() -> None:
    provider = UnionAwareProvider()
    built = [BuiltIn(f'sum(mlrollout_gateway_requests_total{{model_deployment="md-{i}"}})') for i in range(6)]
    answers = ask_all(provider, [*built, "custom_metric", built[0]], None, 3 * len(built[0]) + 150, parallel=1)
    assert len(provider.requests) == 3  # two unions of three built-in queries, the custom query alone
    assert provider.requests[-1] == "custom_metric"  # after the built-in ones
    for i, q in enumerate(built):
        assert answers[q] == series_answer(q) and answers[q].scalar() == i + 1


def test_after_a_failed_request_the_rest_are_not_sent() -> None:
    provider = UnionAwareProvider(fail="Prometheus at http://x is unreachable: Connection refused")
    built = [BuiltIn(f"sum(x{i})") for i in range(4)]
    answers = ask_all(provider, built, None, max_chars=40, parallel=1)
    assert len(provider.requests) == 1
    assert {m.error for m in answers.values()} == {provider.fail}


def test_batched_snapshots_equal_snapshots_taken_alone() -> None:
    batch = looks()
    provider = UnionAwareProvider()
    batched = collect_snapshots(provider, batch, at=1000.0, max_chars=1_000_000)
    alone = [
        collect_snapshot(StaticProvider(series_answer), x.target, x.window_seconds, custom=x.custom,
                         quality=x.quality, at=1000.0)
        for x in batch
    ]  # fmt: skip
    assert batched == alone
    assert batched[1].pairs is not None and batched[1].pairs.both_right == 10  # the second round's details
    assert batched[0].split is not None and batched[0].split.observed is not None
    assert batched[2].custom["queue"].stable == 7.0
    asked_alone = 0
    for x in batch:
        counting = StaticProvider(series_answer)
        collect_snapshot(counting, x.target, x.window_seconds, custom=x.custom, quality=x.quality)
        asked_alone += len(counting.queries)
    # two rounds, each one union (no size limit here), and the custom query per track
    assert len(provider.requests) <= 3 + 2 < asked_alone


def test_a_failed_batch_makes_every_look_inconclusive_with_the_error() -> None:
    provider = UnionAwareProvider(fail="Prometheus at http://x did not answer within 5s")
    snapshots = collect_snapshots(provider, looks(), at=1000.0, parallel=1)
    assert [s.error for s in snapshots] == [provider.fail] * 4
    assert len(provider.requests) == 1  # the first request failed; nothing else was sent
    parallel = UnionAwareProvider(fail=provider.fail)
    snapshots = collect_snapshots(parallel, looks(), at=1000.0, max_chars=2000)
    assert [s.error for s in snapshots] == [provider.fail] * 4
    assert len(parallel.requests) <= 4  # at most the requests in flight when the first failed


@dataclass
class RefusingProvider(UnionAwareProvider):
    """Prometheus refusing one query (a custom metric's PromQL it cannot run) and answering the rest."""

    refused: str = "custom_metric"

    def query(self, promql: str, at: float | None = None) -> Measurement:
        if promql.startswith(self.refused):
            self.requests.append(promql)
            return Measurement(error="Prometheus at http://x refused the query: bad_data: many-to-many matching")
        return super().query(promql, at)


def test_one_looks_refused_custom_query_fails_that_look_only() -> None:
    """Another tenant's query Prometheus refuses must not make this look inconclusive, nor carry its error."""
    batch = looks()
    snapshots = collect_snapshots(RefusingProvider(), batch, at=1000.0, parallel=1)
    alone = [
        collect_snapshot(StaticProvider(series_answer), x.target, x.window_seconds, custom=x.custom,
                         quality=x.quality, at=1000.0)
        for x in batch
    ]  # fmt: skip
    for i in (0, 1, 3):
        assert snapshots[i] == alone[i] and snapshots[i].error is None
    assert snapshots[2].error is not None and "refused the query" in snapshots[2].error
