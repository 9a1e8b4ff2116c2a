"""One serve worker among many on a PostgreSQL database: wake-ups and cluster-wide jobs.

- **Wake-ups.** A store operation that makes work claimable at once (a new delivery, a force
  retry, a resumed configuration, a released lease) sends ``NOTIFY dispatchsim_work`` in its
  transaction; every worker LISTENs on a connection of its own and wakes its dispatcher, so an
  idle worker starts on new work in milliseconds. Polling stays as the fallback: a dispatcher
  also wakes at the next due time it reads from the database, and on the serve sweep.
- **Cluster-wide jobs** (retention, the lease sweep, idempotency expiry) run on one worker at a
  time: the one holding a session-level advisory lock for the job, on a second connection of its
  own. The first worker to try becomes the job's leader and keeps the lock while its session lives;
  when it stops or dies, PostgreSQL drops the lock and the next worker to try takes over. So each
  job runs once per interval across the cluster, whatever the number of workers.

No coordinator of our own: the database is the only shared state.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import psycopg

from .store_pg import JOB_LOCK, WORK_CHANNEL

#: seconds between tries to reconnect a lost listening or leadership connection
RECONNECT = 1.0
#: seconds the leadership check may take before this worker counts its lock session as lost
PROBE_TIMEOUT = 5.0
#: whether this session holds a job's lock: a session-level advisory lock on two int4 keys shows in
#: pg_locks with the first key as classid, the second as objid and objsubid 2
HELD = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        " AND granted AND objsubid = 2 AND classid = %s::int4::oid AND objid = hashtext(%s)::oid)")


class PgCluster:
    """A worker's two connections of its own: one LISTENs, one holds job leaderships."""

    def __init__(self, url: str, *, on_work: Callable[[], None]) -> None:
        self.url = url
        self.on_work = on_work
        self._listener: asyncio.Task[None] | None = None
        self._locks: psycopg.AsyncConnection[Any] | None = None
        self._led: set[str] = set()
        #: notifications received (for the status of this worker and the tests)
        self.notified = 0
        self._listening = asyncio.Event()

    async def start(self) -> None:
        """Start listening (returns once LISTEN is in place)."""
        self._listener = asyncio.create_task(self._listen(), name="dispatchsim-pg-listen")
        waiter = asyncio.create_task(self._listening.wait())
        await asyncio.wait([waiter, self._listener], return_when=asyncio.FIRST_COMPLETED)
        if self._listener.done():
            waiter.cancel()
            self._listener.result()  # raises what stopped it

    async def _listen(self) -> None:
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {WORK_CHANNEL}")
                    self._listening.set()
                    if not first:
                        self.on_work()  # something may have been missed while disconnected
                    first = False
                    async for _ in conn.notifies():
                        self.notified += 1
                        self.on_work()
            except psycopg.OperationalError:
                if first:
                    raise
                await asyncio.sleep(RECONNECT)

    async def leads(self, job: str) -> bool:
        """Whether this worker runs ``job`` now: it still holds the job's lock, or takes it if free.

        Leadership is asked of the database every time, never remembered: psycopg marks a
        connection closed only once it is used, so a leader whose session the server ended (a
        terminated backend, a restart, a cut network) would otherwise keep running the job while
        another worker takes the freed lock. The check is one short query on the lock connection;
        a session that fails it, or does not answer within :data:`PROBE_TIMEOUT`, loses every
        leadership, and a new session leads only the jobs whose lock it takes."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                return await self._lead(job)
        except (psycopg.OperationalError, TimeoutError):
            await self._drop()
            return False

    async def _lead(self, job: str) -> bool:
        if self._locks is None or self._locks.closed:
            self._led.clear()
            self._locks = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        if job in self._led:
            held = await (await self._locks.execute(HELD, (JOB_LOCK, job))).fetchone()
            if held is not None and held[0]:
                return True
            self._led.discard(job)  # not ours any more: only the lock gives it back
        row = await (await self._locks.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                               (JOB_LOCK, job))).fetchone()
        if row is not None and row[0]:
            self._led.add(job)
            return True
        return False

    async def _drop(self) -> None:
        """Forget every leadership and the session that held them (the server frees their locks)."""
        self._led.clear()
        locks, self._locks = self._locks, None
        if locks is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await locks.close()

    @property
    def leading(self) -> list[str]:
        """The jobs this worker leads."""
        return sorted(self._led)

    async def stop(self) -> None:
        """Stop listening and give up every leadership now (a worker that dies loses them when
        the server notices its connection is gone)."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await self._listener
            self._listener = None
        if self._locks is not None:
            with contextlib.suppress(psycopg.Error):
                await self._locks.execute("SELECT pg_advisory_unlock_all()")  # at once, not when the server notices
                await self._locks.close()
            self._locks = None
        self._led.clear()
