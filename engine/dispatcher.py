"""The dispatch loop: claim due work, run attempts, apply the policy's decision.

No SQL here (the store has named operations) and no state a restart cannot rebuild:
in-memory counts only bound concurrency; leases in the store are the truth.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock, iso
from .config import Snapshot
from .sender import Outcome, OutcomeKind, Request, Sender, encode_body
from .store import AttemptResult, Claim, Store


class PayloadUnmappable(Exception):
    """The payload cannot be mapped for this provider (resending cannot fix it)."""


@dataclass(frozen=True)
class Prepared:
    snapshot: Snapshot
    mapper: Callable[[dict[str, Any]], Any] | None


class Dispatcher:
    def __init__(self, *, store: Store, sender: Sender, clock: Clock, log: Any,
                 prepared: Callable[[str, int], Prepared], instance: str,
                 concurrency: int = 100, lease_margin: float = 30.0) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.log = log
        self._prepared = prepared
        self._instance = instance
        self._concurrency = concurrency
        self._lease_margin = lease_margin
        self._tokens = itertools.count(1)
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._per_config: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._stopping = False
        #: finished attempts waiting for the next group commit (one transaction per loop tick)
        self._results: list[tuple[Claim, Snapshot, Outcome | str]] = []
        self._flush_scheduled = False

    # -- control ------------------------------------------------------------------------

    def arm(self) -> None:
        """Allow :meth:`run` again after a :meth:`stop` (called before starting a run, never inside it,
        so a stop issued before the run task first gets scheduled is not lost)."""
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def run(self, *, until_idle: bool = False, deadline: float | None = None) -> None:
        """Dispatch until stopped; with ``until_idle`` return once nothing is due, pending or in flight.

        "Pending" includes retries scheduled in the future: on the virtual clock the wait
        for them is instant. Deliveries behind a blocked queue head are not pending.
        """
        while not self._stopping:
            self._wake.clear()
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                return
            self._release(now)
            saturated = self._fill(now)
            if self._inflight and len(self._inflight) >= self._concurrency:
                timeout = None
            else:
                nxt = self.store.next_wakeup(exclude_configs=saturated)
                if nxt is None and not self._inflight and until_idle:
                    return
                timeout = None if nxt is None else max(0.0, nxt - now)
                if timeout == 0.0 and self._inflight:
                    timeout = None  # due work waits for capacity; a finishing attempt wakes us
            if deadline is not None:
                left = deadline - now
                timeout = left if timeout is None else min(timeout, left)
            await self.clock.wait(self._wake, timeout)

    async def stop(self, *, deadline: float = 10.0) -> int:
        """Stop claiming; wait for attempts in flight up to ``deadline`` seconds, then abandon them.

        Abandoned attempts keep their lease, so the next engine on this file re-sends them.
        Returns how many were abandoned.
        """
        self._stopping = True
        self._wake.set()
        pending = list(self._inflight.values())
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=deadline)
            for task in not_done:
                task.cancel()
            if not_done:
                await asyncio.wait(not_done)
            self.flush()
            return len(not_done)
        self.flush()
        return 0

    def abandon(self) -> None:
        """Crash simulation: drop every attempt in flight without touching the store."""
        self._stopping = True
        self._results.clear()
        for task in self._inflight.values():
            task.cancel()

    # -- one cycle ----------------------------------------------------------------------

    def _release(self, now: float) -> None:
        for did in self.store.release_expired_leases(now):
            self.log.warning("attempt.interrupted", delivery_id=did,
                             reason="lease expired; will be re-sent now")

    def _fill(self, now: float) -> list[str]:
        """Claim as much due work as capacity allows; returns configs at their concurrency limit."""
        saturated = {cid for cid, n in self._per_config.items() if n >= self._limit(cid)}
        room = self._concurrency - len(self._inflight)
        while room > 0:
            asked = room * 2
            rows = self.store.due_candidates(now, asked, exclude_configs=sorted(saturated))
            if not rows:
                break
            leases: list[tuple[int, float]] = []
            planned: Counter[str] = Counter()
            for row in rows:
                cid = row["config_id"]
                if cid in saturated:
                    continue
                prep = self._prepared(cid, row["config_version"])
                limit = prep.snapshot.ordering.concurrency
                if self._per_config[cid] + planned[cid] >= limit:
                    saturated.add(cid)
                    continue
                planned[cid] += 1
                leases.append((row["id"], now + prep.snapshot.timeouts.total + self._lease_margin))
                if len(leases) >= room:
                    break
            if not leases:
                break
            token = f"{self._instance}:{next(self._tokens)}"
            claims = self.store.claim(leases, token=token, now=now)
            for claim in claims:
                self._per_config[claim.config_id] += 1
                task = asyncio.create_task(self._attempt(claim), name=f"attempt-{claim.delivery_id}")
                self._inflight[claim.delivery_id] = task
            room -= len(claims)
            for cid, n in self._per_config.items():
                if n >= self._limit(cid):
                    saturated.add(cid)
            if len(rows) < asked or not claims:
                break
        return sorted(saturated)

    def _limit(self, config_id: str) -> int:
        cfg = self.store.config(config_id)
        if cfg is None:
            return 1
        return self._prepared(config_id, cfg["version"]).snapshot.ordering.concurrency

    # -- one attempt --------------------------------------------------------------------

    async def _attempt(self, claim: Claim) -> None:
        try:
            prep = self._prepared(claim.config_id, claim.config_version)
            snap = prep.snapshot
            started = self.clock.now()
            try:
                body = self._body(claim, prep)
            except PayloadUnmappable as exc:
                self._queue_result(claim, snap, str(exc))
                return
            req = Request(url=snap.endpoint_url, body=body, webhook_id=claim.webhook_id,
                          timestamp=int(started), auth=snap.auth, signing_secret=snap.signing_secret,
                          connect_timeout=snap.timeouts.connect, total_timeout=snap.timeouts.total)
            outcome = await self.sender.send(req)
            self._queue_result(claim, snap, outcome)
        finally:
            self._inflight.pop(claim.delivery_id, None)
            self._per_config[claim.config_id] -= 1
            if self._per_config[claim.config_id] <= 0:
                del self._per_config[claim.config_id]
            self._wake.set()

    def _queue_result(self, claim: Claim, snap: Snapshot, result: Outcome | str) -> None:
        """Group commit: results finished in the same loop tick are stored in one transaction.

        Until it commits, the delivery keeps its lease, so nothing else of its queue can start;
        a crash before the commit means the attempt is re-sent (at-least-once).
        """
        self._results.append((claim, snap, result))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._results:
            return
        batch, self._results = self._results, []
        events: list[tuple[str, str, dict[str, Any]]] = []
        with self.store.tx():
            for claim, snap, result in batch:
                if isinstance(result, str):
                    events.extend(self._finish_unmappable(claim, snap, result))
                else:
                    events.extend(self._finish(claim, snap, result))
        for level, name, fields in events:
            getattr(self.log, level)(name, **fields)
        self._wake.set()

    def _body(self, claim: Claim, prep: Prepared) -> bytes:
        payload = self.store.activity_view(claim.activity_id)
        if prep.mapper is not None:
            payload = prep.mapper(payload)
        return encode_body(payload)

    def _fields(self, claim: Claim) -> dict[str, Any]:
        return {"delivery_id": claim.delivery_id, "queue": claim.queue, "attempt": claim.number,
                "activity_id": claim.activity_id, "config_id": claim.config_id}

    def _finish_unmappable(self, claim: Claim, snap: Snapshot, message: str) -> list[tuple[str, str, dict]]:
        """Resending cannot fix a payload the mapping rejects: FAILED at once, reason mapping_error."""
        now = self.clock.now()
        res = AttemptResult(finished_at=now, outcome="MAPPING_ERROR", error=message, latency=0.0)
        ok = self.store.mark_failed(claim, res, "mapping_error", message, ordered=snap.ordering.ordered,
                                    block=snap.ordering.on_exhausted == "block")
        if ok:
            return [("error", "delivery.failed", {**self._fields(claim), "status": "FAILED",
                                                  "reason": "mapping_error", "error": message})]
        return self._stale(claim)

    def _finish(self, claim: Claim, snap: Snapshot, out: Outcome) -> list[tuple[str, str, dict]]:
        now = self.clock.now()
        res = AttemptResult(finished_at=now, outcome=out.kind.value, status_code=out.status,
                            error=out.error, retry_after=out.retry_after, latency=out.latency, excerpt=out.excerpt)
        fields = {**self._fields(claim), "code": out.status, "outcome": out.kind.value, "latency": out.latency}
        ordered = snap.ordering.ordered
        if out.kind is OutcomeKind.SUCCESS:
            if self.store.mark_dispatched(claim, res, ordered=ordered):
                return [("info", "delivery.dispatched", {**fields, "status": "DISPATCHED"})]
            return self._stale(claim)
        decision = snap.retry.decide(attempt=claim.budget_attempts + 1, now=now,
                                     budget_started_at=claim.budget_started_at, retry_after=out.retry_after,
                                     status=out.status, delivery_key=claim.webhook_id)
        error = out.describe()
        if decision.retry:
            assert decision.at is not None
            if self.store.schedule_retry(claim, res, decision.at, error):
                return [("warning", "delivery.retrying", {
                    **fields, "status": "RETRYING", "error": out.error, "retry_after": out.retry_after,
                    "next_attempt_at": iso(decision.at), "delay": decision.delay})]
            return self._stale(claim)
        else:
            block = snap.ordering.on_exhausted == "block"
            if self.store.mark_failed(claim, res, decision.kind, f"{error}; {decision.reason}",
                                      ordered=ordered, block=block):
                return [("error", "delivery.failed", {
                    **fields, "status": "FAILED", "reason": decision.kind, "error": out.error,
                    "detail": decision.reason, "queue_blocked": bool(ordered and block)})]
            return self._stale(claim)

    def _stale(self, claim: Claim) -> list[tuple[str, str, dict]]:
        return [("warning", "attempt.stale", {
            **self._fields(claim),
            "reason": "lease lost before the attempt finished; result recorded, status untouched"})]
