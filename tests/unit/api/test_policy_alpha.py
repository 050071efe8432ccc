"""The false-rollback budget covers the whole rollout: the policy's alpha is split over the analysed steps.

Each step runs its own sequential test on the window since the step started; with alpha/k per step the
union bound keeps P(any false rollback in the rollout) <= alpha for k analysed steps.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.policy import analysed_steps, per_step_policy


def spec(steps: list[dict[str, Any]] | None = None, alpha: float = 0.05) -> RolloutPolicySpec:
    body: dict[str, Any] = {"significance": {"alpha": alpha}}
    if steps is not None:
        body["strategy"] = {"steps": steps}
    return RolloutPolicySpec.model_validate(body)


def test_the_default_policy_splits_alpha_over_shadow_and_three_canaries() -> None:
    default = spec()
    assert analysed_steps(default.strategy) == 4
    split = per_step_policy(default)
    assert split.significance.alpha == 0.05 / 4
    assert default.significance.alpha == 0.05  # the policy itself is not changed
    assert split.model_copy(update={"significance": default.significance}) == default  # nothing else differs


def test_pauses_and_blue_green_without_preview_take_no_share() -> None:
    canary_pause = spec([{"canary": {"weight": 10}}, {"pause": {"duration": "1m"}}, {"canary": {"weight": 50}}])
    assert analysed_steps(canary_pause.strategy) == 2
    assert per_step_policy(canary_pause).significance.alpha == 0.025
    preview = spec([{"shadow": {"mirrorPercent": 100}}, {"blueGreen": {"previewAnalysis": True}}])
    assert analysed_steps(preview.strategy) == 2
    no_preview = spec([{"blueGreen": {"previewAnalysis": False}}])
    assert analysed_steps(no_preview.strategy) == 0
    assert per_step_policy(no_preview).significance.alpha == 0.05  # nothing is judged: nothing to split


_step = st.one_of(
    st.builds(lambda p: {"shadow": {"mirrorPercent": p}}, st.integers(1, 100)),
    st.just({"pause": {"duration": "30s"}}),
)


@given(
    shadows_and_pauses=st.lists(_step, max_size=4),
    weights=st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True),
    alpha=st.floats(0.001, 0.2),
)
def test_the_shares_of_every_analysed_step_add_up_to_at_most_the_policy_alpha(
    shadows_and_pauses: list[dict[str, Any]], weights: list[int], alpha: float
) -> None:
    steps = shadows_and_pauses + [{"canary": {"weight": w}} for w in sorted(weights)]
    policy = spec(steps, alpha)
    per_step = per_step_policy(policy).significance.alpha
    total = per_step * analysed_steps(policy.strategy)
    assert total <= alpha * (1 + 1e-12) and total >= alpha * (1 - 1e-12)
