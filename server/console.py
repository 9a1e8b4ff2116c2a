"""The web console of serve mode: server-rendered pages (Jinja2) under ``/console/``, no JavaScript.

An operator signs in with a tenant's API key and sees that tenant only: its configurations (state,
circuit, auto-disable, failure streak), its ordered queues, its deliveries FAILED first, a
delivery's attempts and retry timeline, its message-event webhook and batches. Every action (force
retry, skip, replay, recover since T, re-enable) is a GET that shows a confirmation form and a POST
that needs the session's CSRF token and a reason; the engine performs it through its public methods
and keeps who, when and why (``Engine.record_operator_action``). Another tenant's ids answer exactly
as missing ones do (404).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from dispatchsim.engine import (CONSOLE_ORDER, ActivationRefused, Configuration, DeliveryCursor, DeliveryFilter, DispatchsimError,
                                Engine, InvalidTransition, NotFound, Status, config_name, iso, parse_iso, queue_name,
                                storage_error)

from . import console_timeline
from .console_sessions import COOKIE, Session, Sessions
from .keys import KeyRing, hash_key
from .unparsable import abandon_body

PREFIX = "/console"
PAGE_SIZE = 50
SESSION_KEY = web.RequestKey("console_session", Session)
_ENGINE = web.AppKey("console_engine", Engine)
_KEYS = web.AppKey("console_keys", KeyRing)
_SESSIONS = web.AppKey("console_sessions", Sessions)
_JINJA = web.AppKey("console_jinja", jinja2.Environment)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: pages reachable without a session
_OPEN = frozenset({f"{PREFIX}/login", f"{PREFIX}/static/console.css"})


class PageError(DispatchsimError):
    """An answer that is an error page: HTTP status and the sentence shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def is_console_path(path: str) -> bool:
    """Paths the console answers itself (with pages, not API problem documents); no API key needed."""
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


# -- plumbing --------------------------------------------------------------------------------


def _render(request: web.Request, name: str, *, status: int = 200, **ctx: Any) -> web.Response:
    session = request.get(SESSION_KEY)
    html = request.app[_JINJA].get_template(name).render(session=session, prefix=PREFIX, **ctx)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'none';"
                                                            " frame-ancestors 'none'; form-action 'self'"})


@web.middleware
async def console_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Sessions, CSRF and error pages: no handler runs for a caller who is not signed in, and no
    action runs without the session's CSRF token."""
    try:
        if request.path not in _OPEN:
            token = request.cookies.get(COOKIE)
            session = await request.app[_SESSIONS].get(token)
            if session is not None and not await _key_still_valid(request, session):
                await request.app[_SESSIONS].close(token)  # revoked or rotated: the key's sessions end with it
                raise PageError(401, "the API key this session signed in with is no longer valid; sign in again")
            if session is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther(f"{PREFIX}/login")
                raise PageError(401, "sign in first: this session is missing or has expired")
            request[SESSION_KEY] = session
            if request.method == "POST":
                form = await _form(request)
                token = form.get("csrf_token")
                if not session.csrf_ok(token if isinstance(token, str) else None):
                    raise PageError(403, "this form is missing its CSRF token or it is wrong; reload the page")
        return await handler(request)
    except web.HTTPRedirection:
        raise
    except PageError as exc:
        return _render(request, "error.html", status=exc.status, message=exc.message)
    except web.RequestPayloadError:  # e.g. Content-Encoding: gzip on a body that is not
        response = _render(request, "error.html", status=400, message=abandon_body(request))
        response.force_close()
        return response
    except NotFound as exc:
        return _render(request, "error.html", status=404, message=str(exc))
    except ActivationRefused as exc:
        return _render(request, "error.html", status=422, message=f"activation refused: {exc}")
    except InvalidTransition as exc:
        return _render(request, "error.html", status=409, message=str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _render(request, "error.html", status=exc.status, message=exc.reason)
    except Exception as exc:
        unavailable = storage_error(exc)  # before DispatchsimError: StorageUnavailable is one (it answered 400)
        if unavailable is not None:
            return _render(request, "error.html", status=503, message=f"storage unavailable: {unavailable}")
        if isinstance(exc, DispatchsimError):
            return _render(request, "error.html", status=400, message=str(exc))
        request.app[_ENGINE].log.error("console.error", path=request.path, error=f"{type(exc).__name__}: {exc}")
        return _render(request, "error.html", status=500, message="internal error; see the server log")


async def _form(request: web.Request) -> Any:
    """The posted form; one that is not text in its charset, or multipart data without its boundaries,
    is the sender's mistake: a 400 page, and nothing is done (a body aiohttp cannot read at all, such as
    ``Content-Encoding: gzip`` on one that is not, is answered by the middleware)."""
    try:
        return await request.post()
    except (ValueError, LookupError):  # UnicodeDecodeError, a missing boundary; a charset with no codec
        raise PageError(400, "the form cannot be read: it is not UTF-8 text (or not text in the charset its "
                             "Content-Type names), or its multipart boundaries are missing; nothing was "
                             "done") from None


async def _key_still_valid(request: web.Request, session: Session) -> bool:
    """Checked on every request, so that revoking a key (``keys revoke``, the API) ends its console
    sessions at once, as it stops the key itself."""
    principal = await request.app[_KEYS].by_digest(session.key_digest)
    return principal is not None and principal.key_id == session.key_id


def _session(request: web.Request) -> Session:
    return request[SESSION_KEY]


def _engine(request: web.Request) -> Engine:
    return request.app[_ENGINE]


async def _own_config(request: web.Request, config_id: str) -> Configuration:
    """The session tenant's configuration; anyone else's answers as a missing one."""
    missing = f"configuration {config_id!r} not found"
    try:
        cfg = await _engine(request).config(config_id)
    except NotFound:
        raise NotFound(missing) from None
    if cfg.tenant_id != _session(request).tenant_id:
        raise NotFound(missing)
    return cfg


async def _own_delivery(request: web.Request) -> tuple[int, str]:
    raw = request.match_info["delivery_id"]
    found = await _engine(request).store.delivery_by_public_id(raw)
    if found is None or found[2] != _session(request).tenant_id:
        raise NotFound(f"delivery {raw!r} not found")
    return found[0], found[1]


async def _config_ids(request: web.Request) -> list[str]:
    return [c.id for c in await _engine(request).store.configs(_session(request).tenant_id, kind=None)]


def _time_field(name: str, value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise PageError(400, f"{name}: not a date and time (e.g. 2026-01-31T08:00, UTC): {value!r}") from None


def _reason(form: Any) -> str:
    why = form.get("reason")
    if not isinstance(why, str) or not why.strip():
        raise PageError(400, "reason: required; say why (it is kept in the audit record)")
    return why.strip()[:500]


def _t(value: float | None) -> str | None:
    return iso(value) if value is not None else None


# -- sign in and out -------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(f"{PREFIX}/")


async def login_page(request: web.Request) -> web.Response:
    return _render(request, "login.html")


async def login(request: web.Request) -> web.Response:
    form = await _form(request)
    given = form.get("api_key")
    key = given if isinstance(given, str) else None
    principal = await request.app[_KEYS].lookup(key)
    if principal is None or key is None:
        return _render(request, "login.html", status=401, error="that API key is not valid")
    if principal.tenant_id is None:
        return _render(request, "login.html", status=403,
                       error="the console shows one tenant: sign in with a tenant's key, not the admin key")
    names = {k.id: k.name for k in await _engine(request).store.api_keys()}
    label = names.get(principal.key_id)
    who = f"{label} ({principal.key_id})" if label else principal.key_id
    token, _ = await request.app[_SESSIONS].open(key_id=principal.key_id, key_digest=hash_key(key), who=who,
                                                 tenant_id=principal.tenant_id)
    response = web.HTTPSeeOther(f"{PREFIX}/")
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path=PREFIX)
    raise response


async def logout(request: web.Request) -> web.Response:
    await request.app[_SESSIONS].close(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=PREFIX)
    raise response


async def stylesheet(request: web.Request) -> web.Response:
    css = resources.files("dispatchsim.server").joinpath("static/console.css").read_text(encoding="utf-8")
    return web.Response(text=css, content_type="text/css", charset="utf-8",
                        headers={"Cache-Control": "max-age=3600"})


# -- pages -----------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    """Configurations with state, circuit, auto-disable and failure streak; ordered queues; the audit."""
    engine = _engine(request)
    tenant = _session(request).tenant_id
    configs = []
    for cid in await _config_ids(request):
        configs.append({"view": await engine.config_view(cid), "health": await engine.health(cid),
                        "events": cid.endswith("@events")})
    queues = await engine.store.ordered_queues([c["view"]["id"] for c in configs])
    notes = (await engine.notifications(tenant_id=tenant))[-30:][::-1]
    return _render(request, "overview.html", configs=configs, queues=queues, notes=notes, t=_t)


def _encode_cursor(c: DeliveryCursor) -> str:
    return f"{c.section}~{c.created_at!r}~{c.before_id}"


def _decode_cursor(raw: str | None) -> DeliveryCursor | None:
    if not raw:
        return None
    parts = raw.split("~")
    try:
        section, created_at, before = int(parts[0]), float(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        raise PageError(400, "cursor: not a cursor of this list") from None
    if len(parts) != 3 or not 0 <= section < len(CONSOLE_ORDER) or created_at != created_at:
        raise PageError(400, "cursor: not a cursor of this list")
    return DeliveryCursor(section, created_at, before)


async def deliveries(request: web.Request) -> web.Response:
    """Deliveries filtered by status, configuration and creation time, FAILED first, a page at a time."""
    q = request.query
    mine = await _config_ids(request)
    config = q.get("config") or None
    if config is not None:
        await _own_config(request, config)
    status = q.get("status") or None
    if status is not None and status not in Status.__members__:
        raise PageError(400, f"status: one of {', '.join(s.value for s in CONSOLE_ORDER)}")
    flt = DeliveryFilter(config_ids=tuple([config] if config else mine),
                         status=Status(status) if status else None,
                         created_from=_time_field("from", q.get("from")), created_to=_time_field("to", q.get("to")))
    rows, nxt = await _engine(request).store.console_deliveries(flt, cursor=_decode_cursor(q.get("cursor")),
                                                                limit=PAGE_SIZE)
    keep = {k: q[k] for k in ("status", "config", "from", "to") if q.get(k)}
    next_url = (f"{PREFIX}/deliveries?" + urlencode({**keep, "cursor": _encode_cursor(nxt)})) if nxt else None
    return _render(request, "deliveries.html", rows=rows, configs=mine, filters=keep, next_url=next_url,
                   statuses=[s.value for s in CONSOLE_ORDER], t=_t)


async def delivery(request: web.Request) -> web.Response:
    engine = _engine(request)
    did, public = await _own_delivery(request)
    view = (await engine.delivery(did)).to_json()
    attempts = [a.to_json() for a in await engine.attempts(did)]
    timeline = console_timeline.svg(console_timeline.marks(view["created_at"], attempts, view["next_attempt_at"]))
    return _render(request, "delivery.html", d=view, public=public, attempts=attempts, timeline=timeline,
                   actions=_delivery_actions(view))


def _delivery_actions(view: dict[str, Any]) -> list[str]:
    status = view["status"]
    out = []
    if status == Status.FAILED.value:
        out.append("force-retry")
        if view["blocks_queue"]:
            out.append("skip")
    if status == Status.DISPATCHED.value:
        out.append("replay")
    return out


async def events(request: web.Request) -> web.Response:
    """The tenant's message-event webhook (an account is a tenant) and its batches, newest first."""
    engine = _engine(request)
    tenant = _session(request).tenant_id
    try:
        hook = await engine.events.webhook(tenant)
    except NotFound:
        return _render(request, "events.html", hook=None, batches=[])
    batches = (await engine.events.batches(tenant, limit=10_000))[-PAGE_SIZE:][::-1]
    return _render(request, "events.html", hook=hook, batches=batches, t=_t)


# -- actions ---------------------------------------------------------------------------------

_DELIVERY_ACTIONS = {
    "force-retry": "Force retry: put this FAILED delivery back to READY with a fresh attempt budget",
    "skip": "Skip: let the ordered queue move on past this FAILED head (it stays FAILED)",
    "replay": "Replay: send this DISPATCHED delivery again with the same webhook-id",
}
_CONFIG_ACTIONS = {
    "recover": "Recover: force-retry every FAILED delivery of this configuration created since a time",
    "activate": "Re-enable: activate this configuration (a verification GET is sent first)",
}


async def confirm_delivery_action(request: web.Request) -> web.Response:
    _, public = await _own_delivery(request)
    action = request.match_info["action"]
    view = (await _engine(request).delivery((await _own_delivery(request))[0])).to_json()
    return _render(request, "confirm.html", title=_DELIVERY_ACTIONS[action], target=public, action=action,
                   post_url=f"{PREFIX}/deliveries/{public}/{action}", back=f"{PREFIX}/deliveries/{public}",
                   since=False, detail=view)


async def delivery_action(request: web.Request) -> web.Response:
    engine = _engine(request)
    did, public = await _own_delivery(request)
    action = request.match_info["action"]
    why = _reason(await _form(request))
    if action == "force-retry":
        row = await engine.force_retry(did)
    elif action == "skip":
        row = await engine.skip(did)
    else:
        await engine.replay(did)
        row = await engine.delivery(did)
    await engine.record_operator_action(action, who=_session(request).who, why=why, target=f"delivery {public}",
                                        config_id=row.config_id)
    raise web.HTTPSeeOther(f"{PREFIX}/deliveries/{public}")


async def confirm_config_action(request: web.Request) -> web.Response:
    cid = request.match_info["config_id"]
    await _own_config(request, cid)
    action = request.match_info["action"]
    return _render(request, "confirm.html", title=_CONFIG_ACTIONS[action], target=cid, action=action,
                   post_url=f"{PREFIX}/configs/{cid}/{action}", back=f"{PREFIX}/", since=action == "recover",
                   detail=None)


async def config_action(request: web.Request) -> web.Response:
    engine = _engine(request)
    cid = request.match_info["config_id"]
    await _own_config(request, cid)
    action = request.match_info["action"]
    form = await _form(request)
    why = _reason(form)
    if action == "recover":
        raw = form.get("since")
        since = _time_field("since", raw if isinstance(raw, str) else None)
        if since is None:
            raise PageError(400, "since: required (the creation time from which FAILED deliveries are retried)")
        ids = await engine.recover_since(cid, since)
        target = f"configuration {cid} since {iso(since)} ({len(ids)} deliveries)"
    else:
        await engine.activate(cid)
        target = f"configuration {cid}"
    await engine.record_operator_action(action, who=_session(request).who, why=why, target=target, config_id=cid)
    raise web.HTTPSeeOther(f"{PREFIX}/")


# -- mounting --------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("dispatchsim.server", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["span"] = console_timeline.fmt_span
    env.filters["name"] = config_name  # a tenant knows its configurations by name (no tenant scope suffix)
    env.filters["queue"] = queue_name  # and its queues by that name
    return env


def mount_console(app: web.Application, engine: Engine, keys: KeyRing) -> None:
    """Add the console to the API's application: ``/`` redirects to it; it lives under ``/console/``."""
    console = web.Application(middlewares=[console_middleware])
    console[_ENGINE], console[_KEYS], console[_JINJA] = engine, keys, _environment()
    console[_SESSIONS] = Sessions(engine.store, now=engine.clock.now)
    delivery_action_path = "/deliveries/{delivery_id}/{action:force-retry|skip|replay}"
    config_action_path = "/configs/{config_id}/{action:recover|activate}"
    for method, path, handler in [
        ("GET", "/login", login_page), ("POST", "/login", login), ("POST", "/logout", logout),
        ("GET", "/static/console.css", stylesheet), ("GET", "/", overview), ("GET", "/deliveries", deliveries),
        ("GET", "/deliveries/{delivery_id}", delivery), ("GET", delivery_action_path, confirm_delivery_action),
        ("POST", delivery_action_path, delivery_action), ("GET", config_action_path, confirm_config_action),
        ("POST", config_action_path, config_action), ("GET", "/events", events),
    ]:
        console.router.add_route(method, path, handler)
    app.router.add_route("GET", "/", root)
    app.router.add_route("GET", PREFIX, root)
    app.add_subapp(PREFIX, console)
