"""Calling approval hooks off the reconcile pass: the pass asks (`ask`, returns at once) and, on a later pass,
reads the latest answer (`answers`) as a fact for the state machine.

Calls run as tasks on an asyncio loop of the operator's own (the notifier's thread), each in a thread of a
small pool of the hooks' own (`THREADS`; notifications and Secret reads use the loop's default executor, so
hooks that trickle cannot starve them): a hook that hangs holds a task, never a reconciliation. A call ends
within its hook's timeout (`call_sync`'s deadline), and stays "in flight" until its thread has returned: one
call (one thread) per hook and candidate at a time, at most one every `retry_after` seconds; an approval is
final (the machine remembers it in status). Every call ends in one count of
`mlrollout_operator_hook_calls_total{hook_type, result}`; what it answered reaches Events through the
machine (`HookNotApproved`, `HookApproved`), with the reason in words (never the URL).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final

from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import RolloutPolicySpec, SecretKeyRef
from mlrollout.controller import metrics
from mlrollout.controller.kube import KubeApi
from mlrollout.controller.notifications import secret_url
from mlrollout.notify.hooks import Answer, call_sync, hook_body
from mlrollout.notify.http import error_detail
from mlrollout.rollout.facts import HookAnswer

LOG = logging.getLogger("mlrollout.hooks")
RETRY_AFTER: Final = 10.0
THREADS: Final = 4
Key = tuple[str, str, str, str, str]  # namespace, ModelDeployment, hook, revision, the candidate's startedAt


class HookCaller:
    """Asks hooks on ``loop`` (a running loop in another thread) and keeps their latest answers in memory
    (lost on restart: a hook not yet approved in status is simply asked again)."""

    def __init__(
        self, kube: KubeApi, loop: asyncio.AbstractEventLoop, retry_after: float = RETRY_AFTER, threads: int = THREADS
    ) -> None:
        self.kube, self.loop, self.retry_after = kube, loop, retry_after
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlrollout-hooks")
        self._lock = threading.Lock()
        self._answers: dict[Key, HookAnswer] = {}
        self._asked: dict[Key, float] = {}  # monotonic time of the last call started
        self._inflight: set[Key] = set()

    def answers(self, namespace: str, name: str, status: ModelDeploymentStatus) -> Mapping[str, HookAnswer]:
        """The latest answer of each hook about the status' candidate, by hook name."""
        cand = status.candidate
        if cand is None:
            return {}
        with self._lock:
            return {
                key[2]: answer
                for key, answer in self._answers.items()
                if key[:2] == (namespace, name) and key[3:] == (cand.revision, cand.started_at or "")
            }

    def ask(self, obj: Mapping[str, Any], status: ModelDeploymentStatus, policy: RolloutPolicySpec) -> None:
        """Start a call for every hook the status waits for, unless one is running or was made recently."""
        cand = status.candidate
        meta = obj["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        hooks = {h.name: h for h in policy.hooks or []}
        now = time.monotonic()
        with self._lock:
            self._forget(namespace, name, status)
            for entry in status.approvals or []:
                hook = hooks.get(entry.hook)
                if cand is None or hook is None or entry.state != "waiting" or entry.revision != cand.revision:
                    continue
                key: Key = (namespace, name, hook.name, cand.revision, cand.started_at or "")
                if key in self._inflight or now - self._asked.get(key, -self.retry_after) < self.retry_after:
                    continue
                self._inflight.add(key)
                self._asked[key] = now
                body = hook_body(hook, meta, status, len(policy.strategy.steps), datetime.now(UTC))
                payload = body.model_dump_json(by_alias=True).encode()
                timeout = hook.timeout_seconds()
                coro = self._call(key, hook.type, hook.secret_ref, payload, timeout)
                asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _forget(self, namespace: str, name: str, status: ModelDeploymentStatus) -> None:
        """Drop what is known about this ModelDeployment's earlier candidates (bounded memory)."""
        cand = status.candidate
        current = (cand.revision, cand.started_at or "") if cand is not None else None
        for table in (self._answers, self._asked):
            for key in [k for k in table if k[:2] == (namespace, name) and k[3:] != current]:
                del table[key]

    async def _call(self, key: Key, kind: str, ref: SecretKeyRef, payload: bytes, timeout: float) -> None:
        namespace, name, hook, revision, _ = key
        try:
            url, why = await asyncio.to_thread(secret_url, self.kube, namespace, ref)
            if url is None:
                answer = Answer("no_answer", "secret_error", why)
            else:  # awaited to the end, no outer time limit: the key stays in flight while the thread runs
                answer = await self.loop.run_in_executor(self._pool, call_sync, url, payload, timeout)
        except Exception as exc:  # a bug here must not leave the hook "in flight" for ever
            LOG.error("approval hook %s of %s/%s failed unexpectedly: %s", hook, namespace, name, error_detail(exc))
            answer = Answer("no_answer", "unreachable", error_detail(exc))
        metrics.HOOK_CALLS.labels(kind, answer.call).inc()
        log = LOG.info if answer.result == "approved" else LOG.warning
        log("%s/%s: %s hook %s: %s (%s)", namespace, name, kind, hook, answer.result, answer.detail)
        with self._lock:
            self._inflight.discard(key)
            if key in self._asked:  # not forgotten meanwhile (a newer candidate)
                self._answers[key] = HookAnswer(hook, revision, answer.result, answer.detail, datetime.now(UTC))
