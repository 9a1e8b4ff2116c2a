"""The HTTP API of serve mode (aiohttp): the seed's resources, JSON in, JSON (or problem documents) out.

Every error is an RFC 9457 problem document (``application/problem+json``) with a clear
``detail``; bodies, query and path parameters are checked completely against the models of
``server/models.py`` (which also generate the OpenAPI document) before the engine is called, so a
rejected request stores nothing. Keys: ``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

from dispatchsim.engine import (CONFIG_FIELDS, ActivationRefused, ActivityError, ActivityExists, AlreadyExists,
                                Attempt, ConfigError, Delivery, DispatchsimError, EventBatch, InvalidTransition,
                                NotFound, PayloadUnmappable, ResultConflict, config_name, iso, latest_schema_version,
                                parse_iso, queue_name, scope_suffix, scoped_config_id, storage_error)

from . import idempotency, models
from .idempotency import Idempotency
from .console import is_console_path, mount_console
from .keys import KeyRing, Principal
from .openapi import Operation, build_document
from .logs import request_log_middleware
from .problems import Problem, field_problem, problem_response
from .unparsable import abandon_body
from .reference import reference_asset, reference_page
from .prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE, ServeMetrics

MAX_BODY = 1024 * 1024
ENGINE_KEY = web.AppKey("engine", Any)
KEYS_KEY = web.AppKey("keys", KeyRing)
STARTED_KEY = web.AppKey("started", float)
IDEMPOTENCY_KEY = web.AppKey("idempotency", Idempotency)
METRICS_KEY = web.AppKey("metrics", ServeMetrics)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
#: the request as its operation's models read it: (raw JSON body, body model), query model, path model
BODY_KEY = web.RequestKey("body", tuple)
QUERY_KEY = web.RequestKey("query", Any)
PATH_KEY = web.RequestKey("path", Any)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: seconds a client is told to wait when storage cannot take writes (503)
RETRY_AFTER_STORAGE = 5


@web.middleware
async def errors_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as p:
        return _problem(request, p)
    except web.HTTPRequestEntityTooLarge:
        return _problem(request, Problem(413, "too-large", f"request body over {MAX_BODY} bytes"))
    except web.RequestPayloadError:  # e.g. Content-Encoding: gzip on a body that is not
        response = _problem(request, Problem(400, "unparsable-request", abandon_body(request)))
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status, "http-error")
        detail = {404: f"no route {request.method} {request.path}",
                  405: f"{request.method} is not allowed on {request.path}"}.get(exc.status, exc.reason)
        allow = None
        if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110: a 405 lists what is allowed
            allow = {"Allow": ", ".join(sorted(exc.allowed_methods))}
        return _problem(request, Problem(exc.status, slug, detail), headers=allow)
    except NotFound as exc:
        return _problem(request, Problem(404, "not-found", str(exc)))
    except ActivationRefused as exc:
        return _problem(request, Problem(422, "activation-refused", str(exc), reason=str(exc)))
    except ActivityExists as exc:
        return _problem(request, Problem(409, "activity-exists", str(exc), field="id",
                                                 errors=[{"field": "id", "message": str(exc)}]))
    except AlreadyExists as exc:
        return _problem(request, Problem(409, "already-exists", str(exc)))
    except InvalidTransition as exc:
        return _problem(request, Problem(409, "invalid-transition", str(exc)))
    except ResultConflict as exc:
        return _problem(request, Problem(409, "result-exists", str(exc), activityResult=exc.current))
    except PayloadUnmappable as exc:
        return _problem(request, Problem(422, "unmappable",
                                                 f"the payload cannot be mapped for this provider: {exc}"))
    except ActivityError as exc:  # the body has the documented shape, but the engine refuses it: 422
        return _problem(request, field_problem(422, "activity", exc.problems or [(None, str(exc))],
                                                       slug="refused"))
    except ConfigError as exc:
        if exc.field is None:
            return _problem(request, Problem(422, "refused", str(exc)))
        return _problem(request, field_problem(422, "configuration", [(e.field, e.message) for e in exc.errors],
                                                       slug="refused"))
    except Exception as exc:  # storage unavailable, another refusal, or a bug (still a problem document, and logged)
        unavailable = storage_error(exc)  # before DispatchsimError: StorageUnavailable is one (it answered 400)
        if unavailable is not None:  # disk full, busy, read-only, connection lost: rolled back, nothing half-written
            request.app[ENGINE_KEY].log.error("api.storage_unavailable", path=request.path, error=str(unavailable))
            return _problem(request, Problem(503, "storage-unavailable", str(unavailable)),
                                    headers={"Retry-After": str(RETRY_AFTER_STORAGE)})
        if isinstance(exc, DispatchsimError):
            return _problem(request, Problem(400, "invalid", str(exc)))
        request.app[ENGINE_KEY].log.error("api.error", path=request.path, error=f"{type(exc).__name__}: {exc}")
        return _problem(request, Problem(500, "internal", "internal error; see the server log"))


def _problem(request: web.Request, p: Problem, *, headers: dict[str, str] | None = None) -> web.Response:
    """A problem document as the caller may read it: a tenant knows its configurations by name, so the
    stored ids an engine message quotes (``crm-hook~822b33ad``) lose their tenant scope."""
    principal = request.get(PRINCIPAL_KEY)
    if principal is not None and principal.tenant_id is not None:
        suffix = scope_suffix(principal.tenant_id)
        p = Problem(p.status, p.slug, _unscoped(p.detail, suffix), **_unscoped(p.extra, suffix))
    return problem_response(request, p, headers=headers)


def _unscoped(value: Any, suffix: str) -> Any:
    if isinstance(value, str):
        return value.replace(suffix, "")
    if isinstance(value, dict):
        return {k: _unscoped(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [_unscoped(v, suffix) for v in value]
    return value


@web.middleware
async def auth_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    public = route is not None and route.canonical in PUBLIC_PATHS
    if public or is_console_path(request.path):  # the console has its own sign-in
        return await handler(request)
    key = request.headers.get("X-Api-Key")
    if key is None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    principal = await request.app[KEYS_KEY].lookup(key)
    if principal is None:
        raise Problem(401, "unauthorized", "missing or invalid API key (send X-Api-Key: <key>)"
                      if key else "missing API key (send X-Api-Key: <key> or Authorization: Bearer <key>)")
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


@web.middleware
async def idempotency_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A POST with ``Idempotency-Key`` runs at most once per key and tenant (see ``server/idempotency.py``)."""
    key = request.headers.get(idempotency.HEADER)
    if key is None or request.method != "POST" or PRINCIPAL_KEY not in request:
        return await handler(request)
    principal = request[PRINCIPAL_KEY]
    return await idempotency.run_once(request, handler, request.app[IDEMPOTENCY_KEY], principal.tenant_id or "",
                                      idempotency.check_key(key, Problem), Problem)


# -- request helpers -----------------------------------------------------------------------


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def _require_admin(request: web.Request) -> None:
    if not _principal(request).admin:
        raise Problem(403, "forbidden", "this needs the admin key")


def _allow(request: web.Request, tenant_id: str, missing: str) -> None:
    """A tenant key sees its own tenant's things only; anything else answers exactly as a missing
    one does (404, the same ``missing`` detail), so a key cannot learn what other tenants have."""
    p = _principal(request)
    if not p.admin and p.tenant_id != tenant_id:
        raise NotFound(missing)


def _tenant_filter(request: web.Request, given: str | None) -> str | None:
    """The tenant a listing is restricted to: the admin's ``tenant_id`` (if any), a tenant key's own.
    A tenant key naming another tenant gets the answer of a tenant that does not exist."""
    p = _principal(request)
    if p.admin:
        return given
    if given not in (None, p.tenant_id):
        raise NotFound(f"tenant {given!r} not found")
    return p.tenant_id


def _tenant_of_call(request: web.Request, given: str | None) -> str:
    """The tenant a write is for: a tenant key's own (or 403), or the admin's explicit ``tenant_id``."""
    p = _principal(request)
    if p.admin:
        if not given:
            raise field_problem(422, "request", [("tenant_id", "required with the admin key")], slug="refused")
        return given
    if given is not None and given != p.tenant_id:
        raise Problem(403, "forbidden", f"your key belongs to tenant {p.tenant_id!r}, not {given!r}")
    assert p.tenant_id is not None
    return p.tenant_id


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _number(text: str) -> int | float:
    """A JSON number with a fraction or exponent: finite, and an integer when its value is whole
    (JSON Schema's ``integer`` is a value, not a spelling: ``10.0`` is ten, as ``10`` is)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return int(value) if value.is_integer() else value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


async def read_json(request: web.Request) -> Any:
    """The request's JSON value: UTF-8, no NaN, no duplicate keys, no lone surrogates (each a 400)."""
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):
        raise Problem(415, "unsupported-media-type", f"send a JSON body, not {ctype}")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, "too-large", f"request body over {MAX_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        raise Problem(400, "malformed-json", "request body is empty; send a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_number,
                          object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise Problem(400, "malformed-json", "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Problem(400, "malformed-json", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                      ) from None
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "malformed-json", f"malformed JSON: {exc}") from None
    if b"\\u" in raw and _LONE_SURROGATE.search(raw):
        where = _surrogate_path(data, "")
        if where is not None:  # valid JSON text, but not a string any store or encoder can keep
            raise field_problem(400, "body", [(where or "body", "a lone UTF-16 surrogate (\\ud800-\\udfff) is not text")],
                                slug="malformed-json")
    if not isinstance(data, dict):
        raise Problem(400, "invalid", f"request body must be a JSON object, got {models.json_type(data)}")
    return data


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where in a parsed body a string (or key) holds a lone surrogate, e.g. ``activityDetails.note``
    (a key that is not text is named escaped: ``\\ud83d``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            inner = f"{path}.{k}" if path else k
            found = _surrogate_path(k, f"{path}.{ascii(k)[1:-1]}" if path else ascii(k)[1:-1]) \
                or _surrogate_path(v, inner)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def encode_cursor(activity_id: str) -> str:
    """A page cursor: ``a`` and the last activity seen, by its public id (base64url). Never the store's
    sequence number: those are global, and the gap between two of them would tell one tenant how many
    activities the others created in between (see :data:`models.CURSOR_PATTERN`)."""
    return "a" + base64.urlsafe_b64encode(activity_id.encode()).decode().rstrip("=")


async def _activity_cursor(request: web.Request, cursor: str | None, tenant: str | None) -> int:
    """The store's position after the activity a cursor names; a cursor that names no activity of the
    caller's (another tenant's, one gone since, or not a cursor) is refused in the same words."""
    if cursor is None:
        return 0
    try:
        activity_id = base64.urlsafe_b64decode(cursor[1:] + "=" * (-len(cursor[1:]) % 4)).decode()
        if not activity_id.isprintable():  # no id has control characters (a NUL is a driver error on PostgreSQL)
            raise ValueError(activity_id)
        activity = await request.app[ENGINE_KEY].store.activity(activity_id)
    except (ValueError, NotFound):
        activity = None
    if activity is None or (tenant is not None and activity.tenant_id != tenant):
        raise field_problem(422, "query", [("cursor", "the next_cursor of a previous page of this listing")])
    return activity.seq


# -- handlers ------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    await engine.store.ping()
    return web.json_response({"status": "ok", "uptime": round(time.monotonic() - request.app[STARTED_KEY], 3),
                              "in_flight": engine.dispatcher.in_flight})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: the database answers, its schema is the one this code migrates to, and the
    dispatcher runs. Any failing check is a 503 problem document listing them (``checks``)."""
    engine = request.app[ENGINE_KEY]
    checks: dict[str, str] = {}
    try:
        await engine.store.ping()
        checks["database"] = "ok"
        version, latest = await engine.store.schema_version(), latest_schema_version()
        checks["migrations"] = "ok" if version == latest else f"schema {version}, expected {latest}"
    except Exception as exc:  # unreachable or broken database: not ready, and say why
        checks["database"] = f"{type(exc).__name__}: {exc}"
        checks["migrations"] = "unknown (database unreachable)"
    checks["dispatcher"] = "ok" if engine.dispatching else "not running"
    failing = sorted(k for k, v in checks.items() if v != "ok")
    if failing:
        raise Problem(503, "not-ready", "not ready: " + "; ".join(f"{k}: {checks[k]}" for k in failing),
                      checks=checks)
    return web.json_response({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    """The admin key only: the counts are of every tenant together, which no tenant may learn (the
    same reason ids in the API are not sequences). Prometheus sends it as ``authorization: credentials``."""
    _require_admin(request)
    return web.Response(body=request.app[METRICS_KEY].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def list_tenants(request: web.Request) -> web.Response:
    store = request.app[ENGINE_KEY].store
    p = _principal(request)
    rows = await store.tenants() if p.admin else [t for t in [await store.tenant(p.tenant_id)] if t]
    return web.json_response({"items": [t.to_json() for t in rows]})


async def create_tenant(request: web.Request) -> web.Response:
    _require_admin(request)
    _, body = request[BODY_KEY]
    t = await request.app[ENGINE_KEY].add_tenant(body.id, body.name)
    return web.json_response(t.to_json(), status=201)


async def get_tenant(request: web.Request) -> web.Response:
    tid = request.match_info["tenant_id"]
    _allow(request, tid, f"tenant {tid!r} not found")
    t = await request.app[ENGINE_KEY].store.tenant(tid)
    if t is None:
        raise NotFound(f"tenant {tid!r} not found")
    return web.json_response(t.to_json())


async def list_providers(request: web.Request) -> web.Response:
    rows = await request.app[ENGINE_KEY].store.providers()
    return web.json_response({"items": [p.to_json() for p in rows]})


async def create_provider(request: web.Request) -> web.Response:
    _require_admin(request)
    _, body = request[BODY_KEY]
    p = await request.app[ENGINE_KEY].add_provider(body.id, body.name)
    return web.json_response(p.to_json(), status=201)


async def list_configs(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    tenant = _tenant_filter(request, request[QUERY_KEY].tenant_id)
    items = [_config_out(request, await engine.config_view(c.id)) for c in await engine.store.configs(tenant)]
    return web.json_response({"items": items})


async def create_config(request: web.Request) -> web.Response:
    raw, body = request[BODY_KEY]
    tenant = _tenant_of_call(request, body.tenant_id)
    fields = {k: v for k, v in raw.items() if k in CONFIG_FIELDS}
    view = await request.app[ENGINE_KEY].add_config(tenant, body.provider_id, body.channel,
                                                    config_id=body.id, scoped=True, **fields)
    return web.json_response(_config_out(request, view), status=201)


async def _owned_config(request: web.Request, name: str | None = None) -> str:
    """The stored id of the configuration named in the path (or ``name``). A tenant key names its
    configurations within its tenant (``scoped_config_id``); the admin uses stored ids. Another
    tenant's configuration answers as a missing one."""
    name = request.match_info["config_id"] if name is None else name
    engine, p = request.app[ENGINE_KEY], _principal(request)
    missing = f"configuration {name!r} not found"
    if p.admin:
        await engine.config(name)
        return name
    assert p.tenant_id is not None
    for cid in (scoped_config_id(p.tenant_id, name), name):  # the second: made before names were scoped
        try:
            if (await engine.config(cid)).tenant_id == p.tenant_id:
                return cid
        except NotFound:
            pass
    raise NotFound(missing)


def _config_out(request: web.Request, view: dict[str, Any], key: str = "id") -> dict[str, Any]:
    """A tenant key sees its configurations by name; the admin sees stored ids."""
    if _principal(request).admin or view.get(key) is None:
        return view
    out = {**view, key: config_name(view[key])}
    if key == "config_id" and isinstance(view.get("queue"), str):
        out["queue"] = queue_name(view["queue"])  # as the console shows it
    return out


def _notification_out(request: web.Request, note: dict[str, Any]) -> dict[str, Any]:
    """A notification as a tenant key sees it: its configuration by name, and without the global
    sequence number (which would tell how many notifications other tenants have)."""
    if _principal(request).admin:
        return note
    return _config_out(request, {k: v for k, v in note.items() if k != "id"}, "config_id")


async def get_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].config_view(cid)))


async def edit_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    raw, _ = request[BODY_KEY]
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].edit_config(cid, **raw)))


async def activate_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].activate(cid)))


async def deactivate_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].deactivate(cid)))


async def delete_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    await request.app[ENGINE_KEY].delete_config(cid)
    return web.Response(status=204)


async def create_activity(request: web.Request) -> web.Response:
    raw, _ = request[BODY_KEY]
    tenant = _tenant_of_call(request, request[QUERY_KEY].tenant_id)
    activity = await request.app[ENGINE_KEY].create_activity(tenant, raw)
    request.app[METRICS_KEY].on_activities(1)
    return web.json_response(activity, status=201, headers={"Location": f"/api/activities/{activity['id']}"})


async def list_activities(request: web.Request) -> web.Response:
    q: models.ActivitiesQuery = request[QUERY_KEY]
    tenant = _tenant_filter(request, q.tenant_id)
    page = await request.app[ENGINE_KEY].list_activities(
        tenant_id=tenant, channel=q.channel, status=q.status,
        dispatch_status=q.dispatch_status.value if q.dispatch_status is not None else None,
        created_from=q.created_from, created_to=q.created_to,
        after=await _activity_cursor(request, q.cursor, tenant), limit=q.limit)
    cursor = encode_cursor(page.items[-1]["id"]) if page.next_after is not None else None
    return web.json_response({"items": page.items, "next_cursor": cursor})


async def _owned_activity(request: web.Request) -> str:
    aid = request.match_info["activity_id"]
    _allow(request, await request.app[ENGINE_KEY].store.activity_tenant(aid), f"activity {aid!r} not found")
    return aid


async def get_activity(request: web.Request) -> web.Response:
    aid = await _owned_activity(request)
    return web.json_response(await request.app[ENGINE_KEY].activity(aid))


async def activity_deliveries(request: web.Request) -> web.Response:
    aid = await _owned_activity(request)
    items = await request.app[ENGINE_KEY].deliveries(activity_id=aid)
    return web.json_response({"items": [_public_delivery(request, d) for d in items]})


async def _owned_delivery(request: web.Request) -> tuple[int, str]:
    """(internal id, public id) of the delivery named in the path by its public id (its ``webhook-id``)."""
    raw = request.match_info["delivery_id"]
    missing = f"delivery {raw!r} not found"
    found = await request.app[ENGINE_KEY].store.delivery_by_public_id(raw)
    if found is None:
        raise NotFound(missing)
    did, public, tenant = found
    _allow(request, tenant, missing)
    return did, public


def _public_delivery(request: web.Request, delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API shows it: its id is the public one (the ``webhook-id``), its
    configuration and queue named as the caller knows them."""
    view = delivery.to_json()
    batch = view["webhook_id"] if delivery.batch_id is not None else None  # never the store's batch number
    return _config_out(request, {**view, "id": view["webhook_id"], "batch_id": batch}, "config_id")


def _public_attempts(items: list[Attempt], public_id: str) -> list[dict[str, Any]]:
    """Attempts as the API shows them: numbered within their delivery, never a global sequence."""
    return [{**a.to_json(), "id": f"{public_id}.{a.number}", "delivery_id": public_id} for a in items]


async def get_delivery(request: web.Request) -> web.Response:
    did, _ = await _owned_delivery(request)
    return web.json_response(_public_delivery(request, await request.app[ENGINE_KEY].delivery(did)))


async def delivery_attempts(request: web.Request) -> web.Response:
    did, public = await _owned_delivery(request)
    return web.json_response({"items": _public_attempts(await request.app[ENGINE_KEY].attempts(did), public)})


async def force_retry(request: web.Request) -> web.Response:
    did, public = await _owned_delivery(request)
    with _named_publicly(did, public):
        delivery = await request.app[ENGINE_KEY].force_retry(did)
    return web.json_response(_public_delivery(request, delivery))


async def skip_delivery(request: web.Request) -> web.Response:
    did, public = await _owned_delivery(request)
    with _named_publicly(did, public):
        delivery = await request.app[ENGINE_KEY].skip(did)
    return web.json_response(_public_delivery(request, delivery))


@contextlib.contextmanager
def _named_publicly(did: int, public: str) -> Iterator[None]:
    """The engine's refusal names the delivery by the store's id, a global sequence number (which
    would tell one tenant the others' volume): the API names it by its public id."""
    try:
        yield
    except InvalidTransition as exc:
        raise InvalidTransition(str(exc).replace(f"delivery {did} ", f"delivery {public} ", 1)) from None


async def submit_result(request: web.Request) -> web.Response:
    """Idempotent per activity: the same result again is a 200 no-op; a different one is a 409."""
    _, body = request[BODY_KEY]
    aid = body.activity_id
    engine = request.app[ENGINE_KEY]
    _allow(request, await engine.store.activity_tenant(aid), f"activity {aid!r} not found")
    done_at = iso(parse_iso(body.completedAt)) if body.completedAt is not None else None
    result = {"status": body.status, "result": body.result, "completedAt": done_at, "comment": body.comment}
    done = await engine.submit_result(aid, result)
    return web.json_response(done.activity, status=201 if done.created else 200)


# -- message events ------------------------------------------------------------------------


def _events(request: web.Request) -> Any:
    return request.app[ENGINE_KEY].events


async def _owned_account(request: web.Request) -> str:
    """The account (a tenant) in the path; another tenant's answers as a missing one does."""
    account = request.match_info["account_id"]
    missing = f"account {account!r} not found (accounts are tenants)"
    _allow(request, account, missing)
    if await request.app[ENGINE_KEY].store.tenant(account) is None:
        raise NotFound(missing)
    return account


async def put_webhook(request: web.Request) -> web.Response:
    events = _events(request)
    account = await _owned_account(request)
    raw, _ = request[BODY_KEY]
    return web.json_response(await events.configure_webhook(account, {k: v for k, v in raw.items()
                                                                      if v is not None}))


async def get_webhook(request: web.Request) -> web.Response:
    events = _events(request)
    account = await _owned_account(request)
    return web.json_response(await events.webhook(account))


async def list_event_batches(request: web.Request) -> web.Response:
    events = _events(request)
    account = await _owned_account(request)
    q: models.BatchesQuery = request[QUERY_KEY]
    after_id = await _batch_cursor(request, account, q.after)
    rows = await events.batches(account, after_id=after_id, limit=q.limit)
    return web.json_response({"items": [_public_batch(r) for r in rows]})


def _public_batch(batch: EventBatch) -> dict[str, Any]:
    """A batch as the API shows it: known by the public id of the delivery that sends it (its
    ``webhook-id``), never by the store's sequence numbers, which would tell one tenant the volume of all."""
    out = batch.to_json()
    del out["delivery_id"], out["webhook_id"]
    return {**out, "id": batch.webhook_id}


async def _batch_cursor(request: web.Request, account: str, after: str | None) -> int:
    """The store's position after the batch the caller names by its public id (``after``); a batch of
    another account, or none, is refused in the same words."""
    if after is None:
        return 0
    engine = request.app[ENGINE_KEY]
    found = await engine.store.delivery_by_public_id(after)
    batch_id = (await engine.store.delivery(found[0])).batch_id if found is not None else None
    if batch_id is None or (await _events(request).store.batch(batch_id)).account_id != account:
        raise field_problem(422, "query", [("after", "the id of one of this account's event batches "
                                                     "(from a previous page)")])
    return batch_id


async def post_message_events(request: web.Request) -> web.Response:
    events = _events(request)
    raw, body = request[BODY_KEY]
    account = _tenant_of_call(request, body.account_id)
    return web.json_response(await events.post(account, raw["events"]), status=202)


# -- endpoint health and recovery ----------------------------------------------------------


async def replay_delivery(request: web.Request) -> web.Response:
    """Send a DISPATCHED delivery again (same webhook-id), recorded as a replay attempt (409 otherwise)."""
    did, public = await _owned_delivery(request)
    with _named_publicly(did, public):
        attempt = await request.app[ENGINE_KEY].replay(did)
    return web.json_response(_public_attempts([attempt], public)[0])


async def recover_config(request: web.Request) -> web.Response:
    """Force-retry the configuration's FAILED deliveries matching since/until/reason, in creation order."""
    cid = await _owned_config(request)
    _, body = request[BODY_KEY]
    ids = await request.app[ENGINE_KEY].force_retry_where(config_id=cid, since=body.since, until=body.until,
                                                          reason=body.reason)
    public = await request.app[ENGINE_KEY].store.public_delivery_ids(ids)
    return web.json_response({"config_id": request.match_info["config_id"], "count": len(ids),
                              "requeued": [public[i] for i in ids]})


async def config_health(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    engine = request.app[ENGINE_KEY]
    view = await engine.config_view(cid)
    notes = [_notification_out(request, n) for n in await engine.notifications(cid)]
    return web.json_response({"config_id": request.match_info["config_id"], "active": view["active"],
                              "inactive_reason": view["inactive_reason"], "inactive_since": view["inactive_since"],
                              **await engine.health(cid), "notifications": notes})


async def list_notifications(request: web.Request) -> web.Response:
    """Operator notifications (auto-disable, circuit changes) of the caller's configurations, oldest first."""
    q: models.NotificationsQuery = request[QUERY_KEY]
    tenant = _tenant_filter(request, q.tenant_id)
    engine = request.app[ENGINE_KEY]
    if q.config_id is not None:
        items = await engine.notifications(await _owned_config(request, q.config_id))
    else:
        items = await engine.notifications(tenant_id=tenant or None)
    items = [_notification_out(request, n) for n in items[-q.limit:]]
    return web.json_response({"items": items})


M = models
_CFG, _ACT, _DLV, _ACC = M.ConfigPath, M.ActivityPath, M.DeliveryPath, M.AccountPath
_ACTIVITY_ID, _CONFIG_ID = {"activity_id": "$response.body#/id"}, {"config_id": "$response.body#/id"}
#: Every operation: the router, the request validation and the OpenAPI document read this one list.
ROUTES: list[Operation] = [
    Operation("GET", "/healthz", healthz, "Liveness: the process answers and its database is reachable",
              response=M.Health, public=True, tag="operations"),
    Operation("GET", "/readyz", readyz, "Readiness: database reachable, migrations current, dispatcher running\n"
              "Any failing check is a 503 problem document listing them all (checks).", response=M.Ready,
              public=True, errors=(503,), tag="operations"),
    Operation("GET", "/metrics", metrics, "Prometheus metrics (prometheus_client)\nActivities, deliveries, "
              "transitions, attempts by outcome, attempt latency and dispatch lag histograms, requests by route. "
              "The admin key only (Authorization: Bearer <admin key>): the counts are of all tenants together.",
              errors=(403,), content=((METRICS_CONTENT_TYPE.split(";")[0], {"type": "string"}),), tag="operations"),
    Operation("GET", "/api/openapi.json", openapi, "This OpenAPI document", public=True,
              content=(("application/json", {"type": "object"}),), tag="operations"),
    Operation("GET", "/api/docs", reference_page, "This API reference as an interactive page (Swagger UI, offline)",
              public=True, content=(("text/html", {"type": "string"}),), tag="operations"),
    Operation("GET", "/api/docs/assets/{asset}", reference_asset, "A script or style sheet of the reference page",
              public=True, content=(("text/javascript", {"type": "string"}), ("text/css", {"type": "string"})),
              errors=(404,),
              path_params=M.AssetPath, tag="operations"),
    Operation("GET", "/api/tenants", list_tenants, "Tenants (a tenant key sees its own)", response=M.RegisteredList,
              tag="tenants"),
    Operation("POST", "/api/tenants", create_tenant, "Create a tenant (admin key)", ok=201, response=M.Registered,
              body=M.RegisterIn, errors=(403,), tag="tenants"),
    Operation("GET", "/api/tenants/{tenant_id}", get_tenant, "One tenant", response=M.Registered,
              path_params=M.TenantPath, tag="tenants"),
    Operation("GET", "/api/providers", list_providers, "Providers (registered centrally)", response=M.RegisteredList,
              tag="tenants"),
    Operation("POST", "/api/providers", create_provider, "Register a provider (admin key)", ok=201,
              response=M.Registered, body=M.RegisterIn, errors=(403,), tag="tenants"),
    Operation("GET", "/api/dispatch-configurations", list_configs, "Dispatch configurations (secrets shown as ***)",
              response=M.ConfigList, query=M.TenantQuery, errors=(404,), tag="configurations"),
    Operation("POST", "/api/dispatch-configurations", create_config,
              "Create a configuration (inactive until activated)", ok=201, response=M.DispatchConfiguration,
              body=M.ConfigIn, errors=(403, 404), tag="configurations",
              links=tuple((name, name, _CONFIG_ID) for name in ("get_config", "edit_config", "activate_config",
                                                                 "deactivate_config", "config_health", "delete_config"))),
    Operation("GET", "/api/dispatch-configurations/{config_id}", get_config, "One configuration",
              response=M.DispatchConfiguration, path_params=_CFG, tag="configurations"),
    Operation("PATCH", "/api/dispatch-configurations/{config_id}", edit_config,
              "Edit: a new immutable version; deliveries keep theirs\nAn active configuration whose endpoint or "
              "auth changes is verified again (422 when the verification GET fails).",
              response=M.DispatchConfiguration, body=M.ConfigEdit, path_params=_CFG, errors=(422,),
              tag="configurations"),
    Operation("DELETE", "/api/dispatch-configurations/{config_id}", delete_config, "Delete a configuration "
              "(409 while it has deliveries waiting to be sent)", ok=204, path_params=_CFG, errors=(409,),
              tag="configurations"),
    Operation("POST", "/api/dispatch-configurations/{config_id}/activate", activate_config,
              "Activate: a verification GET to the endpoint must answer 2xx (422 with the reason otherwise)",
              response=M.DispatchConfiguration, path_params=_CFG, tag="configurations"),
    Operation("POST", "/api/dispatch-configurations/{config_id}/deactivate", deactivate_config,
              "Pause: nothing new is created and pending deliveries wait", response=M.DispatchConfiguration,
              path_params=_CFG, tag="configurations"),
    Operation("GET", "/api/activities", list_activities, "Activities, oldest first, a page at a time; pages "
              "continue after a previous page's next_cursor (422 when it names none of the caller's activities)",
              response=M.ActivityPage, query=M.ActivitiesQuery, errors=(404, 422), tag="activities"),
    Operation("POST", "/api/activities", create_activity,
              "Create an activity and fan it out to the active configurations of its channel",
              ok=201, response=M.Activity, body=M.ActivityIn, query=M.TenantQuery, errors=(403, 404),
              tag="activities", links=(("activity", "get_activity", _ACTIVITY_ID),
                                       ("deliveries", "activity_deliveries", _ACTIVITY_ID))),
    Operation("GET", "/api/activities/{activity_id}", get_activity, "One activity: exactly the payload dispatched",
              response=M.Activity, path_params=_ACT, tag="activities"),
    Operation("GET", "/api/activities/{activity_id}/deliveries", activity_deliveries, "An activity's deliveries",
              response=M.DeliveryList, path_params=_ACT, tag="activities",
              links=tuple((name, name, {"delivery_id": "$response.body#/items/0/id"}) for name in (
                  "get_delivery", "delivery_attempts", "force_retry", "skip_delivery", "replay_delivery"))),
    Operation("GET", "/api/deliveries/{delivery_id}", get_delivery, "One delivery", response=M.Delivery,
              path_params=_DLV, tag="deliveries"),
    Operation("GET", "/api/deliveries/{delivery_id}/attempts", delivery_attempts, "Every HTTP try of a delivery",
              response=M.AttemptList, path_params=_DLV, tag="deliveries"),
    Operation("POST", "/api/deliveries/{delivery_id}/force-retry", force_retry,
              "Force retry: FAILED -> READY with a fresh budget (409 unless FAILED)", response=M.Delivery,
              path_params=_DLV, tag="deliveries"),
    Operation("POST", "/api/deliveries/{delivery_id}/skip", skip_delivery,
              "Let an ordered queue blocked by this FAILED head move on", response=M.Delivery, path_params=_DLV,
              tag="deliveries"),
    Operation("POST", "/api/deliveries/{delivery_id}/replay", replay_delivery,
              "Send a DISPATCHED delivery again (same webhook-id), recorded as a replay attempt\n"
              "Its status and counters never change (409 unless DISPATCHED).", response=M.Attempt,
              path_params=_DLV, tag="deliveries"),
    Operation("POST", "/api/dispatch-configurations/{config_id}/recover", recover_config,
              "Force-retry the configuration's FAILED deliveries created in [since, until], in creation order\n"
              "No body (or {}): all of them.", response=M.Recovered, body=M.RecoverIn, body_required=False,
              path_params=_CFG, tag="configurations"),
    Operation("GET", "/api/dispatch-configurations/{config_id}/health", config_health,
              "Circuit state, failure streak, active flag and the configuration's notifications",
              response=M.EndpointHealth, path_params=_CFG, tag="configurations"),
    Operation("GET", "/api/notifications", list_notifications,
              "Operator notifications (circuit changes, auto-disable) of your configurations, the latest `limit`",
              response=M.NotificationList, query=M.NotificationsQuery, errors=(404,), tag="configurations"),
    Operation("POST", "/api/integration/activity-results/tasks", submit_result,
              "Submit a provider's result; fills activityResult\nThe same result again: 200; a different one: 409.",
              ok=201, response=M.Activity, also=((200, M.Activity),), body=M.ResultIn, errors=(404,),
              tag="activities"),
    Operation("GET", "/api/accounts/{account_id}/webhook", get_webhook,
              "The account's message-event webhook (secrets ***) and event counts", response=M.Webhook,
              path_params=_ACC, tag="message events"),
    Operation("PUT", "/api/accounts/{account_id}/webhook", put_webhook,
              "Save the account's webhook; a test GET must answer 2xx (422 with the reason otherwise)",
              response=M.Webhook, body=M.WebhookIn, path_params=_ACC, errors=(422,), tag="message events"),
    Operation("GET", "/api/accounts/{account_id}/event-batches", list_event_batches,
              "The account's event batches, sent or waiting, in order; pages continue after a batch's id "
              "(422 when it is not one of this account's)", response=M.EventBatchList,
              query=M.BatchesQuery, path_params=_ACC, errors=(422,), tag="message events"),
    Operation("POST", "/api/message-events", post_message_events,
              "Queue Reteno message events for the account's webhook (all or nothing)", ok=202,
              response=M.EventsAccepted, body=M.MessageEventsIn, errors=(403, 404), tag="message events"),
]


#: paths anyone may read: liveness, readiness, this document and its reference page
PUBLIC_PATHS = frozenset(op.path for op in ROUTES if op.public)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of :data:`ROUTES`, built once from the models."""
    return build_document(ROUTES)


def _checked(op: Operation) -> _Handler:
    """``op.handler`` behind its models: query, path and body are parsed (a 400 naming every field at
    fault otherwise) and handed to it as ``request[QUERY_KEY]``, ``[PATH_KEY]`` and ``[BODY_KEY]``."""

    async def run(request: web.Request) -> web.StreamResponse:
        if op.public:
            return await op.handler(request)
        request[QUERY_KEY] = models.parse_query(op.query, request.query)
        if op.path_params is not None:
            request[PATH_KEY] = models.parse(op.path_params, dict(request.match_info), "path")
        if op.body is not None:
            if op.body_required or request.content_length or request.body_exists and await request.read():
                raw = await read_json(request)
                request[BODY_KEY] = (raw, models.parse(op.body, raw, "body"))
            else:
                request[BODY_KEY] = ({}, op.body())
        elif request.method != "GET" and (request.content_length or request.body_exists and await request.read()):
            raise Problem(400, "invalid", "this call takes no request body")
        return await op.handler(request)

    run.__name__ = op.handler.__name__
    return run


def make_app(engine: Any, *, keys: KeyRing, idempotency_retention: float = idempotency.DEFAULT_RETENTION
             ) -> web.Application:
    """The aiohttp application over ``engine`` (message events included: they are its deliveries too).

    Idempotency keys are dated by the engine's clock and kept ``idempotency_retention`` seconds.
    Every request is logged (``http.request``) with its ``X-Request-Id``; metrics follow the engine."""
    serve_metrics = ServeMetrics()
    serve_metrics.attach(engine)

    def count(request: web.Request, status: int) -> None:
        route = request.match_info.route.resource
        serve_metrics.requests.labels(request.method, route.canonical if route is not None else "unrouted",
                                      str(status)).inc()

    app = web.Application(middlewares=[request_log_middleware(engine.log, count), errors_middleware,
                                       auth_middleware, idempotency_middleware], client_max_size=MAX_BODY)
    app[METRICS_KEY] = serve_metrics
    app[IDEMPOTENCY_KEY] = Idempotency(engine.store.idempotency_store(), engine.clock.now, idempotency_retention)
    app[ENGINE_KEY] = engine
    app[KEYS_KEY] = keys
    app[STARTED_KEY] = time.monotonic()
    for op in ROUTES:
        app.router.add_route(op.method, op.path, _checked(op))
    mount_console(app, engine, keys)
    return app
