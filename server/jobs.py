"""Recurring jobs of serve mode (lease sweep, stats, WAL checkpoint, retention) on APScheduler,
with a shutdown that stops them in order.

APScheduler's asyncio executor cancels the jobs still running when it shuts down. A job that
waits for a worker thread (the WAL checkpoint) is then cancelled while the thread keeps using
its SQLite connection, the caller goes on to close that connection, and the process can die
with a segmentation fault. :meth:`Jobs.stop` therefore stops scheduling first, lets the job
that is running finish, and only then shuts the scheduler down, so whoever closes connections
afterwards knows nothing uses them. A job's failure is one log line, never a traceback.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

Job = Callable[[], Awaitable[Any]]


class Jobs:
    """A set of interval jobs: :meth:`add` them, :meth:`start`, and ``await`` :meth:`stop`."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._scheduler = AsyncIOScheduler()
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def add(self, name: str, job: Job, *, seconds: float) -> None:
        """Run ``job`` every ``seconds``; never two runs of one job at once, missed runs coalesced."""
        self._scheduler.add_job(self._guard, "interval", args=(name, job), seconds=seconds, id=name,
                                coalesce=True, max_instances=1)

    def start(self) -> None:
        self._scheduler.start()

    async def _guard(self, name: str, job: Job) -> None:
        if self._stopping:
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed run is logged; the next run comes at its time
            self.log.error("job.failed", job=name, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._running.discard(task)

    async def stop(self) -> None:
        """Stop scheduling, wait for the runs in progress (never cancelling them), then shut down."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.pause()
        await asyncio.sleep(0)  # runs submitted just before the pause start now and see _stopping
        while self._running:
            await asyncio.wait(set(self._running))
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
