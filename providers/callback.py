"""Results callbacks: a provider reporting back with ``POST /api/integration/activity-results/tasks``.

Body sent (one POST per activity, after ``delay`` clock seconds)::

    {"activity_id": "<payload id>", "status": "COMPLETED", "result": {"outcome": "DONE"}}

``status`` and ``result`` come from the endpoint's ``results_callback`` config; the API key,
when configured, goes in ``header`` (default ``X-Api-Key``).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp

from .config import ResultsCallback
from .recorder import CallbackRecord, Recorder


class Callbacks:
    """Schedules and sends results callbacks on the running loop; owns one client session."""

    def __init__(self, recorder: Recorder, now: Callable[[], float]) -> None:
        self._recorder = recorder
        self._now = now
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent: set[tuple[str, str]] = set()

    def schedule(self, endpoint: str, config: ResultsCallback, activity_id: str) -> None:
        if config.once:
            if (endpoint, activity_id) in self._sent:
                return
            self._sent.add((endpoint, activity_id))
        task = asyncio.get_running_loop().create_task(self._send(endpoint, config, activity_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, endpoint: str, config: ResultsCallback, activity_id: str) -> None:
        await asyncio.sleep(config.delay)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        body = {"activity_id": activity_id, "status": config.status, "result": dict(config.result)}
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers[config.header] = config.api_key
        record = CallbackRecord(at=self._now(), endpoint=endpoint, url=config.url, activity_id=activity_id,
                                status=None)
        self._recorder.callbacks.append(record)
        try:
            async with self._session.post(config.url, data=json.dumps(body), headers=headers) as resp:
                await resp.read()
                record.status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
