"""Which child applies a pass may leave out (`controller/applied.py`): pure decisions and the memo."""

from __future__ import annotations

from typing import Any

from mlrollout.controller import applied

RESYNC = 300.0


def service(port: int = 80, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "wine", "namespace": "ml", **meta},
            "spec": {"ports": [{"port": port}]}}  # fmt: skip


def test_the_digest_is_the_intent_not_the_key_order() -> None:
    a = service()
    b = {"spec": {"ports": [{"port": 80}]}, "metadata": {"namespace": "ml", "name": "wine"}, "kind": "Service",
         "apiVersion": "v1"}  # fmt: skip
    assert applied.digest(a) == applied.digest(b)
    assert applied.digest(a) != applied.digest(service(port=81))
    assert applied.key(a) == ("v1", "Service", "ml", "wine")


def test_never_applied_changed_or_expired_is_applied() -> None:
    wanted = applied.digest(service())
    done = applied.Applied(wanted, at=100.0, generation=None)
    assert applied.must_apply(None, wanted, 100.0, RESYNC, applied.UNOBSERVED)
    assert applied.must_apply(done, applied.digest(service(port=81)), 101.0, RESYNC, applied.UNOBSERVED)
    assert not applied.must_apply(done, wanted, 100.0 + RESYNC - 0.1, RESYNC, applied.UNOBSERVED)
    assert applied.must_apply(done, wanted, 100.0 + RESYNC, RESYNC, applied.UNOBSERVED)  # the drift bound


def test_a_resync_interval_of_zero_applies_every_pass_as_before() -> None:
    wanted = applied.digest(service())
    assert applied.must_apply(applied.Applied(wanted, 5.0, None), wanted, 5.0, 0.0, applied.UNOBSERVED)
    assert not applied.cleaned_recently(5.0, 5.0, 0.0)


def test_an_observed_child_that_is_gone_or_edited_is_applied_at_once() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wine", "generation": 3}}
    wanted = applied.digest({"kind": "Deployment", "spec": {}})
    done = applied.Applied(wanted, at=100.0, generation=3)
    assert not applied.must_apply(done, wanted, 101.0, RESYNC, deployment)  # as our apply left it
    assert applied.must_apply(done, wanted, 101.0, RESYNC, None)  # deleted by someone
    edited = {**deployment, "metadata": {"name": "wine", "generation": 4}}  # a spec edit or an HPA's scale
    assert applied.must_apply(done, wanted, 101.0, RESYNC, edited)


def test_a_cleanup_is_sent_again_only_after_the_resync_interval() -> None:
    assert not applied.cleaned_recently(None, 10.0, RESYNC)
    assert applied.cleaned_recently(10.0, 10.0 + RESYNC - 1, RESYNC)
    assert not applied.cleaned_recently(10.0, 10.0 + RESYNC, RESYNC)


def test_the_memo_is_per_model_deployment_and_starts_afresh_for_a_new_uid() -> None:
    memo = applied.AppliedMemo()
    child = applied.key(service())
    done = applied.Applied("d", 1.0, None)
    memo.record("ml", "wine", "uid-1", child, done)
    memo.record_cleaned("ml", "wine", "uid-1", "NetworkPolicy", 1.0)
    assert memo.applied("ml", "wine", "uid-1", child) == done
    assert memo.applied("ml", "beer", "uid-2", child) is None
    assert memo.cleaned_at("ml", "wine", "uid-1", "NetworkPolicy") == 1.0
    memo.record_cleaned("ml", "wine", "uid-1", "NetworkPolicy", None)
    assert memo.cleaned_at("ml", "wine", "uid-1", "NetworkPolicy") is None
    assert memo.applied("ml", "wine", "uid-3", child) is None  # deleted and created again: nothing known
    memo.record("ml", "wine", "uid-3", child, done)
    memo.forget("ml", "wine")
    assert memo.applied("ml", "wine", "uid-3", child) is None
    assert len(memo) == 0  # lookups keep nothing: only applies made are remembered


def test_a_failed_apply_forgets_only_its_child() -> None:
    memo = applied.AppliedMemo()
    routes, other = applied.key(service()), ("v1", "ConfigMap", "ml", "wine-routes")
    memo.record("ml", "wine", "uid-1", routes, applied.Applied("d", 1.0, None))
    memo.record("ml", "wine", "uid-1", other, applied.Applied("e", 1.0, None))
    memo.unknown("ml", "wine", "uid-1", routes)
    assert memo.applied("ml", "wine", "uid-1", routes) is None
    assert memo.applied("ml", "wine", "uid-1", other) is not None
    memo.unknown("ml", "beer", "uid-2", routes)  # nothing known of it: nothing to forget, nothing kept
    assert len(memo) == 1
