"""Which steps are analysed, and where each sits: the analysis holds the whole rollout to the policy's alpha.

The judge weighs each analysed step's evidence by its position among the rollout's analysed steps
(mlrollout.analysis.carry), so counting them right is what keeps a false rollback over the whole rollout
within alpha.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.policy import analysed_index, analysed_steps


def spec(steps: list[dict[str, Any]] | None = None) -> RolloutPolicySpec:
    body: dict[str, Any] = {}
    if steps is not None:
        body["strategy"] = {"steps": steps}
    return RolloutPolicySpec.model_validate(body)


def test_the_default_policy_analyses_shadow_and_three_canaries() -> None:
    default = spec()
    assert analysed_steps(default.strategy) == 4
    assert [analysed_index(default.strategy, i) for i in range(4)] == [0, 1, 2, 3]


def test_pauses_and_blue_green_without_preview_are_not_analysed() -> None:
    canary_pause = spec([{"canary": {"weight": 10}}, {"pause": {"duration": "1m"}}, {"canary": {"weight": 50}}])
    assert analysed_steps(canary_pause.strategy) == 2
    assert [analysed_index(canary_pause.strategy, i) for i in range(3)] == [0, 1, 1]
    preview = spec([{"shadow": {"mirrorPercent": 100}}, {"blueGreen": {"previewAnalysis": True}}])
    assert analysed_steps(preview.strategy) == 2
    no_preview = spec([{"blueGreen": {"previewAnalysis": False}}])
    assert analysed_steps(no_preview.strategy) == 0


_step = st.one_of(
    st.builds(lambda p: {"shadow": {"mirrorPercent": p}}, st.integers(1, 100)),
    st.just({"pause": {"duration": "30s"}}),
)


@given(
    shadows_and_pauses=st.lists(_step, max_size=4),
    weights=st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True),
)
def test_analysed_steps_get_distinct_consecutive_indexes(
    shadows_and_pauses: list[dict[str, Any]], weights: list[int]
) -> None:
    policy = spec(shadows_and_pauses + [{"canary": {"weight": w}} for w in sorted(weights)])
    steps = policy.strategy.steps
    analysed = [analysed_index(policy.strategy, i) for i, s in enumerate(steps) if s.pause is None]
    assert analysed == list(range(analysed_steps(policy.strategy)))
