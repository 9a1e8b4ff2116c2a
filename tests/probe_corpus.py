"""A corpus of webhook receivers: one careful one, and broken ones with one realistic bug each.

The probe is only as good as the bugs it catches; this corpus measures that, the way mutation
testing measures a test suite. Every receiver is a real aiohttp app on 127.0.0.1 that a provider
team could have written: it checks an API key, verifies Standard Webhooks signatures, parses the
JSON, de-duplicates by ``webhook-id``, queues the work per commerce (the ordered queue) and reports
each processed activity twice over — a results callback (the seed's ``activity-results`` call) and a
status URL (``GET /status/{id}`` → ``{"processed": n, "sequence": k}``) that reads its "database".
Each broken receiver overrides exactly one step.

The signature check here is a deliberate second copy of the sender's signing, written from the
Standard Webhooks spec: a receiver must not share the sender's code, or a bug in it would agree
with itself.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

API_HEADER = "X-Api-Key"
API_KEY = "corpus-k3y-value"
SECRET = "whsec_" + base64.b64encode(b"corpus-signing-key-0123").decode()
TOLERANCE = 300.0  #: seconds a webhook-timestamp may be off
WORK = 0.01  #: seconds of processing per delivery (background, after the acknowledgement)


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CorrectReceiver:
    """What a careful provider team ships. Subclasses each break one step."""

    bug: ClassVar[str] = "none: the correct receiver"
    path: ClassVar[str] = "/hooks"

    def __init__(self, *, callback_url: str, now: Callable[[], float]) -> None:
        self.callback_url = callback_url
        self.now = now  #: the clock the sender signs with (wall time in production)
        self.seen: set[str] = set()  #: webhook-ids taken
        self.db: dict[str, list[dict[str, Any]]] = defaultdict(list)  #: activity id -> stored rows
        self.order: dict[str, int] = {}  #: activity id -> position in processing order
        self.latest: dict[str, str] = {}  #: commerce -> id of the activity whose state is kept
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(self.path, self.on_get)
        app.router.add_post(self.path, self.on_post)
        app.router.add_get("/status/{id}", self.on_status)
        return app

    async def __aenter__(self) -> CorrectReceiver:
        self.session = aiohttp.ClientSession()
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + self.path
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    @property
    def status_url(self) -> str:
        return self.base + "/status/{id}"

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ---- the request path: authenticate, verify, parse, de-duplicate, queue, acknowledge

    async def on_get(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def on_status(self, request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        return web.json_response({"processed": len(self.db.get(aid, [])), "sequence": self.order.get(aid)})

    async def on_post(self, request: web.Request) -> web.StreamResponse:
        try:
            headers = self.headers(request)
            self.authenticate(headers)
            body = await request.read()
            self.verify(headers, body)
            data = self.parse(body)
        except Rejected as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return await self.take(headers["webhook-id"], data, body)

    def headers(self, request: web.Request) -> Any:
        """Header names are case-insensitive: keep aiohttp's CIMultiDict."""
        return request.headers

    def authenticate(self, headers: Any) -> None:
        if not hmac.compare_digest(headers.get(API_HEADER, ""), API_KEY):
            raise Rejected(401, "bad or missing API key")

    def verify(self, headers: Any, body: bytes) -> None:
        wid, ts, sig = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
        if not (wid and ts and sig):
            raise Rejected(401, "missing webhook-id, webhook-timestamp or webhook-signature")
        self.check_signature(wid, ts, sig, body)
        self.check_timestamp(ts)

    def check_signature(self, wid: str, ts: str, sig: str, body: bytes) -> None:
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        if not any(hmac.compare_digest(part.partition(",")[2], expected) for part in sig.split()):
            raise Rejected(401, "signature mismatch")

    def check_timestamp(self, ts: str) -> None:
        if not ts.isdigit() or abs(self.now() - int(ts)) > TOLERANCE:
            raise Rejected(401, "timestamp outside the tolerance")

    def parse(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Rejected(400, "body is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise Rejected(422, "expected an activity object with an id")
        return data

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        if wid in self.seen:  # no await between the check and the add: atomic on one loop
            return web.json_response({"ok": True, "duplicate": True})
        self.seen.add(wid)
        self.enqueue(data)
        return web.json_response({"ok": True})

    def enqueue(self, data: dict[str, Any]) -> None:
        """One worker per commerce: deliveries of one queue are processed in the order they came."""
        queue_key = str(data.get("commerceExternalId"))
        queue = self.queues.get(queue_key)
        if queue is None:
            queue = self.queues[queue_key] = asyncio.Queue()
            self.spawn(self.worker(queue))
        queue.put_nowait(data)

    async def worker(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            data = await queue.get()
            await self.process(data)

    async def process(self, data: dict[str, Any]) -> None:
        await asyncio.sleep(self.work_time(data))
        await self.store(data)
        await self.report(data["id"])

    def work_time(self, data: dict[str, Any]) -> float:
        return WORK

    async def store(self, data: dict[str, Any]) -> None:
        self.db[data["id"]].append(data)
        self.order.setdefault(data["id"], len(self.order))
        self.latest[str(data.get("commerceExternalId"))] = data["id"]

    async def report(self, activity_id: str) -> None:
        """The seed's results call, with the processing sequence."""
        assert self.session is not None
        body = {"activity_id": activity_id, "status": "COMPLETED", "sequence": self.order.get(activity_id)}
        async with self.session.post(self.callback_url, json=body) as resp:
            await resp.read()


# ---- credentials


class NoAuth(CorrectReceiver):
    bug = "accepts requests without credentials, and with wrong ones (the key check was never wired in)"

    def authenticate(self, headers: Any) -> None:
        return None


class AuthPresenceOnly(CorrectReceiver):
    bug = "accepts wrong credentials: checks that the API-key header is present, not its value"

    def authenticate(self, headers: Any) -> None:
        if not headers.get(API_HEADER):
            raise Rejected(401, "missing API key")


class ProcessesBeforeAuth(CorrectReceiver):
    bug = "answers 401 to bad credentials, but only after queueing the delivery (auth middleware in the wrong place)"

    async def on_post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            data = self.parse(body)
        except Rejected as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        wid = request.headers.get("webhook-id", "")
        if wid not in self.seen:
            self.seen.add(wid)
            self.enqueue(data)
        try:
            self.authenticate(request.headers)
            self.verify(request.headers, body)
        except Rejected as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response({"ok": True})


# ---- signatures


class NoSignatureCheck(CorrectReceiver):
    bug = "accepts bad and missing signatures (signature verification never enabled)"

    def verify(self, headers: Any, body: bytes) -> None:
        return None


class SignatureOptional(CorrectReceiver):
    bug = "accepts a request without a signature: verifies webhook-signature only when the header is there"

    def verify(self, headers: Any, body: bytes) -> None:
        if headers.get("webhook-signature"):
            super().verify(headers, body)


class NoTimestampTolerance(CorrectReceiver):
    bug = "accepts a stale timestamp: verifies the signature but not the age of webhook-timestamp (replays pass)"

    def check_timestamp(self, ts: str) -> None:
        return None


class CaseSensitiveHeaders(CorrectReceiver):
    bug = "treats header names case-sensitively (copies the headers into a plain dict)"

    def headers(self, request: web.Request) -> Any:
        return dict(request.headers)

    def authenticate(self, headers: Any) -> None:
        if not hmac.compare_digest(headers.get(API_HEADER, ""), API_KEY):
            raise Rejected(401, "bad or missing API key")

    async def on_post(self, request: web.Request) -> web.StreamResponse:
        if "webhook-id" not in dict(request.headers):
            return web.json_response({"error": "missing webhook-id"}, status=400)
        return await super().on_post(request)


# ---- bodies


class MalformedJsonAccepted(CorrectReceiver):
    bug = "answers 2xx to a body that is not JSON (logs the parse error and acknowledges)"

    def parse(self, body: bytes) -> dict[str, Any]:
        try:
            return super().parse(body)
        except Rejected:
            return {}

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        if not data:
            return web.json_response({"ok": True})
        return await super().take(wid, data, body)


class UnknownFields500(CorrectReceiver):
    bug = "answers 500 to unknown fields (a strict schema: extra properties forbidden)"

    def parse(self, body: bytes) -> dict[str, Any]:
        data = super().parse(body)
        if any(key.startswith("probe") for key in data):
            raise Rejected(500, "Unrecognized field")
        return data


class Latin1Names500(CorrectReceiver):
    bug = "breaks on non-ASCII text: encodes names for a Latin-1 legacy system inside the request (500)"

    def parse(self, body: bytes) -> dict[str, Any]:
        data = super().parse(body)
        try:
            str(data.get("commerceName") or "").encode("latin-1")
        except UnicodeEncodeError:
            raise Rejected(500, "internal error") from None
        return data


class LosesEmojiAfterAck(CorrectReceiver):
    bug = ("acknowledges, then loses some payloads: its database column cannot store characters outside "
           "the BMP (emoji), and the error happens in the background")

    async def store(self, data: dict[str, Any]) -> None:
        if any(ord(ch) > 0xFFFF for ch in json.dumps(data, ensure_ascii=False)):
            raise ValueError("Incorrect string value for column 'name'")
        await super().store(data)

    async def process(self, data: dict[str, Any]) -> None:
        try:
            await super().process(data)
        except ValueError:
            pass  # logged, and the delivery is gone


class ErrorBody200(CorrectReceiver):
    bug = "answers 200 with a body that says error when validation fails (and drops the delivery)"

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        if data.get("commerceName") is None:
            return web.json_response({"status": "error", "message": "commerceName is required"})
        return await super().take(wid, data, body)


class SlowOnLargeBodies(CorrectReceiver):
    bug = "slow on large bodies: converts the payload for a legacy system inside the request, 3 s per 16 KiB"

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        await asyncio.sleep(3.0 * len(body) / 16384)
        return await super().take(wid, data, body)


# ---- time and concurrency


class SerialisesWork(CorrectReceiver):
    bug = "times out under a burst: processes inside the request under one global lock (1 s each)"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.lock = asyncio.Lock()

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        if wid in self.seen:
            return web.json_response({"ok": True})
        self.seen.add(wid)
        async with self.lock:
            await asyncio.sleep(1.0)
            await self.store(data)
        self.spawn(self.report(data["id"]))
        return web.json_response({"ok": True})


class LateAck(CorrectReceiver):
    bug = ("answers 2xx after the sender's timeout: looks each new commerce up in a slow CRM (12 s) before "
           "answering, and records the webhook-id only when done, so the sender's retry is processed again")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.known: set[str] = set()

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        if wid in self.seen:
            return web.json_response({"ok": True})
        commerce = str(data.get("commerceExternalId"))
        if commerce not in self.known:
            await asyncio.sleep(12.0)
            self.known.add(commerce)
        await self.store(data)
        self.seen.add(wid)
        self.spawn(self.report(data["id"]))
        return web.json_response({"ok": True})


class NoDedup(CorrectReceiver):
    bug = "processes a duplicate twice: ignores webhook-id"

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        self.enqueue(data)
        return web.json_response({"ok": True})


class RacyDedup(CorrectReceiver):
    bug = ("processes an overlapping retry twice: de-duplicates with check-then-insert around the work, so a copy "
           "that arrives while the first is in progress passes the check")

    async def take(self, wid: str, data: dict[str, Any], body: bytes) -> web.StreamResponse:
        if wid in self.seen:
            return web.json_response({"ok": True})
        await asyncio.sleep(0.2)  # the work, done in the request
        await self.store(data)
        self.seen.add(wid)
        self.spawn(self.report(data["id"]))
        return web.json_response({"ok": True})


class OutOfOrder(CorrectReceiver):
    bug = ("processes out of order and keeps the older state: every delivery gets its own background task, and a "
           "churn-risk activity waits for a CRM call, so a later activity of the same commerce lands first")

    def enqueue(self, data: dict[str, Any]) -> None:
        self.spawn(self.process(data))

    def work_time(self, data: dict[str, Any]) -> float:
        return 0.5 if (data.get("reason") or {}).get("code") == "CHURN_RISK" else WORK


class LostUpdate(CorrectReceiver):
    bug = ("loses deliveries under concurrency: appends to a stored list with read-modify-write across an await "
           "(the results callback still goes out: only the status URL shows the loss)")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: list[dict[str, Any]] = []

    async def store(self, data: dict[str, Any]) -> None:
        rows = list(self.rows)  # read
        await asyncio.sleep(0.005)  # the round trip to the database
        rows.append(data)
        self.rows = rows  # write: concurrent writers overwrite each other
        self.order.setdefault(data["id"], len(self.order))

    async def on_status(self, request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        n = sum(1 for row in self.rows if row["id"] == aid)
        return web.json_response({"processed": n, "sequence": self.order.get(aid) if n else None})


class Redirects(CorrectReceiver):
    bug = "redirects (308 to the URL with a trailing slash, as a web framework does): senders never follow"

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_route("*", self.path + "/", self.on_slash)
        return app

    async def on_post(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(self.path + "/")

    async def on_slash(self, request: web.Request) -> web.StreamResponse:
        return await super().on_post(request)


class NoVerificationGet(CorrectReceiver):
    bug = "answers 405 to the verification GET (only POST is routed), so activation is refused"

    async def on_get(self, request: web.Request) -> web.Response:
        raise web.HTTPMethodNotAllowed("GET", ["POST"])


@dataclass(frozen=True)
class Case:
    """One broken receiver and how the probe must catch it: check id -> words its summary must contain."""

    receiver: type[CorrectReceiver]
    kind: str  #: the bug kind of issue 20's list it covers
    caught_by: dict[str, str | tuple[str, ...]]
    collateral: frozenset[str] = frozenset()  #: other checks the same bug may fail too

    @property
    def name(self) -> str:
        return self.receiver.__name__


_LATE = frozenset({"burst_ordered", "burst_concurrent", "duplicate", "duplicate_overlap", "header_case",
                   "edge_unicode", "edge_nulls", "edge_unknown_fields", "edge_max_size", "slow_body",
                   "connection_reuse", "connection_new"})
_REJECTIONS = frozenset({"auth_missing", "auth_wrong", "signature_missing", "signature_tampered", "signature_stale"})
_ALL_POSTS = frozenset({"seed_post", "header_case", "duplicate", "duplicate_overlap", "burst_ordered",
                        "burst_concurrent", "edge_unicode", "edge_nulls", "edge_unknown_fields", "edge_max_size",
                        "slow_body", "connection_reuse", "connection_new"})

CORPUS: list[Case] = [
    Case(NoAuth, "accepts wrong or missing credentials",
         {"auth_missing": "ACCEPTED without credentials", "auth_wrong": "ACCEPTED with wrong credentials"}),
    Case(AuthPresenceOnly, "accepts wrong or missing credentials",
         {"auth_wrong": "ACCEPTED with wrong credentials"}),
    Case(ProcessesBeforeAuth, "acknowledges then loses / processes what it rejected",
         {"auth_missing": "REJECTED BUT PROCESSED", "auth_wrong": "REJECTED BUT PROCESSED",
          "signature_missing": "REJECTED BUT PROCESSED", "signature_tampered": "REJECTED BUT PROCESSED",
          "signature_stale": "REJECTED BUT PROCESSED"}),
    Case(NoSignatureCheck, "accepts a bad or missing signature",
         {"signature_missing": "ACCEPTED without a webhook-signature", "signature_tampered": "ACCEPTED with a tampered",
          "signature_stale": "ACCEPTED with a 1-hour-old timestamp"}),
    Case(SignatureOptional, "accepts a bad or missing signature",
         {"signature_missing": "ACCEPTED without a webhook-signature"}),
    Case(NoTimestampTolerance, "accepts a stale timestamp", {"signature_stale": "ACCEPTED with a 1-hour-old"}),
    Case(CaseSensitiveHeaders, "treats header names case-sensitively",
         {"header_case": "header names treated case-sensitively"}),
    Case(MalformedJsonAccepted, "2xx on malformed JSON", {"malformed_json": "2xx on malformed JSON"}),
    Case(UnknownFields500, "5xx on unknown fields", {"edge_unknown_fields": "HTTP 500"}),
    Case(Latin1Names500, "breaks on non-ASCII text", {"edge_unicode": "HTTP 500"}),
    Case(LosesEmojiAfterAck, "acknowledges then loses (for some payloads)",
         {"edge_unicode": "ACKNOWLEDGED BUT NEVER PROCESSED"}),
    Case(ErrorBody200, "answers 200 with a body that says error",
         {"edge_nulls": "2xx WITH AN ERROR BODY"}),
    Case(SlowOnLargeBodies, "slow or failing on large bodies", {"edge_max_size": "no answer within the sender's 10s timeout"}),
    Case(SerialisesWork, "times out under a burst of concurrent deliveries",
         {"burst_concurrent": "TIMEOUT"}, frozenset({"duplicate_overlap"})),
    Case(LateAck, "answers 2xx after the sender's timeout (a duplicate follows)",
         {"seed_post": ("no answer within the sender's 10s timeout", "processed more than once")}, _LATE),
    Case(NoDedup, "processes a duplicate twice (ignores webhook-id)",
         {"duplicate": "PROCESSED MORE THAN ONCE", "duplicate_overlap": "PROCESSED MORE THAN ONCE"}),
    Case(RacyDedup, "processes a duplicate twice (retries overlap)",
         {"duplicate_overlap": "PROCESSED MORE THAN ONCE"}),
    Case(OutOfOrder, "processes out of order and keeps the older state",
         {"burst_ordered": "PROCESSED IN THE WRONG ORDER"}),
    Case(LostUpdate, "acknowledges then loses (under concurrency)",
         {"burst_concurrent": "ACKNOWLEDGED BUT NEVER PROCESSED"}, _ALL_POSTS),
    Case(Redirects, "redirects (3xx, never followed by senders)",
         {"seed_post": "redirect to /hooks/ (senders never follow redirects)"}, _ALL_POSTS | _REJECTIONS),
    Case(NoVerificationGet, "verification GET refused", {"verify_get": "HTTP 405"}),
]

#: The settings every corpus probe runs with: the defaults, with the sizes kept small enough to be quick.
PROBE_SETTINGS: dict[str, Any] = {
    "auth": {"type": "api_key", "header": API_HEADER, "value": API_KEY}, "secret": SECRET,
    "ordered": 6, "burst": 12, "rate": 100, "concurrency": 12, "slow_body": 1.0, "callback_wait": 5.0,
    "settle": 1.0, "check_time": 30.0,
}

def names_the_bug(summary: str, words: str | tuple[str, ...]) -> bool:
    return all(w in summary for w in ((words,) if isinstance(words, str) else words))


#: Filled by the corpus tests: receiver name -> caught (the correct receiver: passed); printed at the end.
SCORE: dict[str, bool] = {}


def counts(report: Any) -> Counter[str]:
    return Counter(c.status.value for c in report.checks)
