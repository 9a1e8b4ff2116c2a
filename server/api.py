"""The HTTP API of serve mode (aiohttp): the seed's resources, JSON in, JSON (or problem documents) out.

Every error is an RFC 9457 problem document (``application/problem+json``) with a clear
``detail``; bodies are checked completely before the engine is called, so a rejected request
stores nothing. Keys: ``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``.
"""
from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dispatchsim.engine import (CONFIG_FIELDS, ActivationRefused, ActivityError, ActivityExists, ConfigError,
                                DispatchsimError, InvalidTransition, NotFound, PayloadUnmappable,
                                ResultConflict, Status, config_name, iso, parse_iso, latest_schema_version,
                                scoped_config_id, storage_error)

from . import idempotency
from .idempotency import Idempotency
from .console import is_console_path, mount_console
from .keys import KeyRing, Principal
from .openapi import openapi_document
from .logs import request_log_middleware
from .prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE, ServeMetrics

MAX_BODY = 1024 * 1024
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/openapi.json"})
ENGINE_KEY = web.AppKey("engine", Any)
KEYS_KEY = web.AppKey("keys", KeyRing)
STARTED_KEY = web.AppKey("started", float)
IDEMPOTENCY_KEY = web.AppKey("idempotency", Idempotency)
METRICS_KEY = web.AppKey("metrics", ServeMetrics)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
PROBLEM_BASE = "https://dispatchsim.dev/problems/"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(DispatchsimError):
    """An error answer: status, a short slug for ``type``, and the detail shown to the caller."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.extra = status, slug, detail, extra


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           500: "Internal Server Error", 503: "Service Unavailable"}
#: seconds a client is told to wait when storage cannot take writes (503)
RETRY_AFTER_STORAGE = 5


def problem_response(request: web.Request, p: Problem, *, headers: dict[str, str] | None = None) -> web.Response:
    doc = {"type": PROBLEM_BASE + p.slug, "title": _TITLES.get(p.status, "Error"), "status": p.status,
           "detail": p.detail, "instance": request.path, **p.extra}
    if p.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'ApiKey header="X-Api-Key"'}
    return web.json_response(doc, status=p.status, content_type="application/problem+json", headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as p:
        return problem_response(request, p)
    except web.HTTPRequestEntityTooLarge:
        return problem_response(request, Problem(413, "too-large", f"request body over {MAX_BODY} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status, "http-error")
        detail = {404: f"no route {request.method} {request.path}",
                  405: f"{request.method} is not allowed on {request.path}"}.get(exc.status, exc.reason)
        allow = None
        if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110: a 405 lists what is allowed
            allow = {"Allow": ", ".join(sorted(exc.allowed_methods))}
        return problem_response(request, Problem(exc.status, slug, detail), headers=allow)
    except NotFound as exc:
        return problem_response(request, Problem(404, "not-found", str(exc)))
    except ActivationRefused as exc:
        return problem_response(request, Problem(422, "activation-refused", str(exc), reason=str(exc)))
    except ActivityExists as exc:
        return problem_response(request, Problem(409, "activity-exists", str(exc), field="id"))
    except InvalidTransition as exc:
        return problem_response(request, Problem(409, "invalid-transition", str(exc)))
    except ResultConflict as exc:
        return problem_response(request, Problem(409, "result-exists", str(exc), activityResult=exc.current))
    except PayloadUnmappable as exc:
        return problem_response(request, Problem(422, "unmappable",
                                                 f"the payload cannot be mapped for this provider: {exc}"))
    except (ConfigError, ActivityError) as exc:
        return problem_response(request, Problem(400, "invalid", str(exc)))
    except DispatchsimError as exc:
        return problem_response(request, Problem(400, "invalid", str(exc)))
    except Exception as exc:  # a bug (still a problem document, and logged), or storage unavailable
        unavailable = storage_error(exc)
        if unavailable is not None:  # disk full, busy, read-only: rolled back, nothing half-written
            request.app[ENGINE_KEY].log.error("api.storage_unavailable", path=request.path, error=str(unavailable))
            return problem_response(request, Problem(503, "storage-unavailable", str(unavailable)),
                                    headers={"Retry-After": str(RETRY_AFTER_STORAGE)})
        request.app[ENGINE_KEY].log.error("api.error", path=request.path, error=f"{type(exc).__name__}: {exc}")
        return problem_response(request, Problem(500, "internal", "internal error; see the server log"))


@web.middleware
async def auth_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or is_console_path(request.path):  # the console has its own sign-in
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


def _tenant_of_call(request: web.Request, given: Any) -> str:
    """The tenant a write is for: a tenant key's own (or 403), or the admin's explicit ``tenant_id``."""
    p = _principal(request)
    if given is not None and not isinstance(given, str):
        raise Problem(400, "invalid", "tenant_id: must be a string")
    if p.admin:
        if not given:
            raise Problem(400, "invalid", "tenant_id: required with the admin key")
        return given
    if given is not None and given != p.tenant_id:
        raise Problem(403, "forbidden", f"your key belongs to tenant {p.tenant_id!r}, not {given!r}")
    assert p.tenant_id is not None
    return p.tenant_id


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


async def read_json(request: web.Request, *, kind: type = dict) -> Any:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):
        raise Problem(415, "unsupported-media-type", f"send a JSON body, not {ctype}")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, "too-large", f"request body over {MAX_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        raise Problem(400, "malformed-json", "request body is empty; send a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise Problem(400, "malformed-json", "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Problem(400, "malformed-json", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                      ) from None
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "malformed-json", f"malformed JSON: {exc}") from None
    if b"\\u" in raw and _LONE_SURROGATE.search(raw):
        where = _surrogate_path(data, "body")
        if where is not None:  # valid JSON text, but not a string any store or encoder can keep
            raise Problem(400, "malformed-json", f"{where}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text",
                          field=where)
    if not isinstance(data, kind):
        want = "a JSON object" if kind is dict else "a JSON array"
        raise Problem(400, "invalid", f"request body must be {want}, got {_json_type(data)}")
    return data


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where in a parsed body a string (or key) holds a lone surrogate, e.g. ``body.activityDetails.note``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _surrogate_path(k, path) or _surrogate_path(v, f"{path}.{k}")
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "object": (dict,), "boolean": (bool,),
                                       "array": (list,), "integer": (int,), "number": (int, float),
                                       "preset": (str, dict)}


def check_fields(data: dict[str, Any], *, required: dict[str, str] | None = None,
                 optional: dict[str, str] | None = None, where: str = "body") -> None:
    """Unknown fields and wrong types, all reported at once. ``"string?"`` allows null."""
    required, optional = required or {}, optional or {}
    problems = []
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} (known: {', '.join([*required, *optional])})")
    for key in required:
        if key not in data:
            problems.append(f"{key}: required")
    for key, spec in {**required, **optional}.items():
        if key not in data:
            continue
        value, nullable, typ = data[key], spec.endswith("?"), spec.rstrip("?")
        if value is None:
            if not nullable:
                problems.append(f"{key}: must not be null")
            continue
        ok = isinstance(value, _TYPES[typ]) and not (typ in ("integer", "number") and isinstance(value, bool))
        if not ok:
            label = "preset name (string) or an object" if typ == "preset" else typ
            problems.append(f"{key}: must be {'an' if typ[0] in 'aeiou' else 'a'} {label}"
                            f"{' or null' if nullable else ''}, got {_json_type(value)}")
    if problems:
        raise Problem(400, "invalid", f"invalid {where}: " + "; ".join(problems))


def _json_type(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


def _query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise Problem(400, "invalid", f"unknown query parameter(s) {', '.join(unknown)}"
                      f" (known: {', '.join(sorted(allowed))})")
    return {k: request.query[k] for k in request.query}


def _limit(value: str | None, default: int = 50, top: int = 500) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= top:
        raise Problem(400, "invalid", f"limit: an integer from 1 to {top}")
    return int(value)


def _time_param(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise Problem(400, "invalid", f"{name}: not an ISO-8601 timestamp: {value!r}") from None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"a:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The last ``seq`` seen; a 400 for anything that is not one of our cursors."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    kind, _, num = raw.partition(":")
    if kind != "a" or not num.isdigit():
        raise Problem(400, "invalid", "cursor: not a cursor returned by this API")
    return int(num)


def _no_body(request: web.Request) -> None:
    if request.content_length:
        raise Problem(400, "invalid", "this call takes no request body")


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
    return web.Response(body=request.app[METRICS_KEY].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def list_tenants(request: web.Request) -> web.Response:
    _query(request, set())
    store = request.app[ENGINE_KEY].store
    p = _principal(request)
    rows = await store.tenants() if p.admin else [t for t in [await store.tenant(p.tenant_id)] if t]
    return web.json_response({"items": [t.to_json() for t in rows]})


async def create_tenant(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await read_json(request)
    check_fields(body, required={"id": "string"}, optional={"name": "string?"})
    t = await request.app[ENGINE_KEY].add_tenant(body["id"], body.get("name"))
    return web.json_response(t.to_json(), status=201)


async def get_tenant(request: web.Request) -> web.Response:
    tid = request.match_info["tenant_id"]
    _allow(request, tid, f"tenant {tid!r} not found")
    t = await request.app[ENGINE_KEY].store.tenant(tid)
    if t is None:
        raise NotFound(f"tenant {tid!r} not found")
    return web.json_response(t.to_json())


async def list_providers(request: web.Request) -> web.Response:
    _query(request, set())
    rows = await request.app[ENGINE_KEY].store.providers()
    return web.json_response({"items": [p.to_json() for p in rows]})


async def create_provider(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await read_json(request)
    check_fields(body, required={"id": "string"}, optional={"name": "string?"})
    p = await request.app[ENGINE_KEY].add_provider(body["id"], body.get("name"))
    return web.json_response(p.to_json(), status=201)


#: JSON types of the configuration fields; a field the engine adds later defaults to "object or null"
#: (the engine validates its content either way).
_CONFIG_TYPES = {f: {"endpoint_url": "string", "signing_secret": "string?", "retry": "preset?",
                     "ordering": "preset?"}.get(f, "object?") for f in CONFIG_FIELDS}


async def list_configs(request: web.Request) -> web.Response:
    qs = _query(request, {"tenant_id"})
    engine = request.app[ENGINE_KEY]
    tenant = _tenant_filter(request, qs.get("tenant_id"))
    items = [_config_out(request, await engine.config_view(c.id)) for c in await engine.store.configs(tenant)]
    return web.json_response({"items": items})


async def create_config(request: web.Request) -> web.Response:
    body = await read_json(request)
    check_fields(body, required={"provider_id": "string", "channel": "string", "endpoint_url": "string"},
                 optional={"tenant_id": "string", "id": "string",
                           **{k: v for k, v in _CONFIG_TYPES.items() if k != "endpoint_url"}})
    tenant = _tenant_of_call(request, body.pop("tenant_id", None))
    fields = {k: v for k, v in body.items() if k in CONFIG_FIELDS}
    view = await request.app[ENGINE_KEY].add_config(tenant, body["provider_id"], body["channel"],
                                                    config_id=body.get("id"), scoped=True, **fields)
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
    if key == "config_id" and isinstance(view.get("queue"), str) and view["queue"].startswith(view[key]):
        out["queue"] = out[key] + view["queue"][len(view[key]):]
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
    body = await read_json(request)
    check_fields(body, optional=_CONFIG_TYPES)
    if "endpoint_url" in body and body["endpoint_url"] is None:
        raise Problem(400, "invalid", "endpoint_url: must not be null")
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].edit_config(cid, **body)))


async def activate_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    _no_body(request)
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].activate(cid)))


async def deactivate_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    _no_body(request)
    return web.json_response(_config_out(request, await request.app[ENGINE_KEY].deactivate(cid)))


async def delete_config(request: web.Request) -> web.Response:
    cid = await _owned_config(request)
    await request.app[ENGINE_KEY].delete_config(cid)
    return web.Response(status=204)


async def create_activity(request: web.Request) -> web.Response:
    qs = _query(request, {"tenant_id"})
    body = await read_json(request)
    tenant = _tenant_of_call(request, qs.get("tenant_id"))
    activity = await request.app[ENGINE_KEY].create_activity(tenant, body)
    request.app[METRICS_KEY].on_activities(1)
    return web.json_response(activity, status=201, headers={"Location": f"/api/activities/{activity['id']}"})


async def list_activities(request: web.Request) -> web.Response:
    qs = _query(request, {"tenant_id", "channel", "status", "dispatch_status", "created_from", "created_to",
                          "cursor", "limit"})
    page = await request.app[ENGINE_KEY].list_activities(
        tenant_id=_tenant_filter(request, qs.get("tenant_id")), channel=qs.get("channel"),
        status=qs.get("status"), dispatch_status=qs.get("dispatch_status"),
        created_from=_time_param("created_from", qs.get("created_from")),
        created_to=_time_param("created_to", qs.get("created_to")),
        after=decode_cursor(qs["cursor"]) if "cursor" in qs else 0, limit=_limit(qs.get("limit")))
    cursor = encode_cursor(page.next_after) if page.next_after is not None else None
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


def _public_delivery(request: web.Request, view: dict[str, Any]) -> dict[str, Any]:
    """A delivery as the API shows it: its id is the public one (the ``webhook-id``), its
    configuration and queue named as the caller knows them."""
    return _config_out(request, {**view, "id": view["webhook_id"]}, "config_id")


def _public_attempts(items: list[dict[str, Any]], public_id: str) -> list[dict[str, Any]]:
    """Attempts as the API shows them: numbered within their delivery, never a global sequence."""
    return [{**a, "id": f"{public_id}.{a['number']}", "delivery_id": public_id} for a in items]


async def get_delivery(request: web.Request) -> web.Response:
    did, _ = await _owned_delivery(request)
    return web.json_response(_public_delivery(request, await request.app[ENGINE_KEY].delivery(did)))


async def delivery_attempts(request: web.Request) -> web.Response:
    did, public = await _owned_delivery(request)
    return web.json_response({"items": _public_attempts(await request.app[ENGINE_KEY].attempts(did), public)})


async def force_retry(request: web.Request) -> web.Response:
    did, _ = await _owned_delivery(request)
    _no_body(request)
    return web.json_response(_public_delivery(request, await request.app[ENGINE_KEY].force_retry(did)))


async def skip_delivery(request: web.Request) -> web.Response:
    did, _ = await _owned_delivery(request)
    _no_body(request)
    return web.json_response(_public_delivery(request, await request.app[ENGINE_KEY].skip(did)))


async def submit_result(request: web.Request) -> web.Response:
    """Idempotent per activity: the same result again is a 200 no-op; a different one is a 409."""
    body = await read_json(request)
    check_fields(body, required={"activity_id": "string", "status": "string"},
                 optional={"result": "object?", "completedAt": "string?", "comment": "string?"})
    aid = body["activity_id"]
    try:
        uuid.UUID(aid)
    except ValueError:
        raise Problem(400, "invalid", f"activity_id: use the payload's id (a UUID), got {aid!r}") from None
    if not body["status"].strip():
        raise Problem(400, "invalid", "status: must not be empty (e.g. COMPLETED)")
    if body.get("completedAt") is not None:
        body["completedAt"] = iso(_time_param("completedAt", body["completedAt"]) or 0.0)
    engine = request.app[ENGINE_KEY]
    _allow(request, await engine.store.activity_tenant(aid), f"activity {aid!r} not found")
    result = {"status": body["status"], "result": body.get("result"), "completedAt": body.get("completedAt"),
              "comment": body.get("comment")}
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
    body = await read_json(request)
    check_fields(body, required={"url": "string"},
                 optional={"auth": "object?", "signing_secret": "string?", "batch_size": "integer",
                           "max_wait": "number", "retry": "object?", "timeouts": "object?",
                           "circuit_breaker": "object?", "auto_disable": "object?"})
    return web.json_response(await events.configure_webhook(account, {k: v for k, v in body.items()
                                                                      if v is not None}))


async def get_webhook(request: web.Request) -> web.Response:
    events = _events(request)
    account = await _owned_account(request)
    return web.json_response(await events.webhook(account))


async def list_event_batches(request: web.Request) -> web.Response:
    events = _events(request)
    account = await _owned_account(request)
    qs = _query(request, {"after", "limit"})
    after = qs.get("after", "0")
    if not after.isdigit():
        raise Problem(400, "invalid", "after: a batch id (integer)")
    rows = await events.batches(account, after_id=int(after), limit=_limit(qs.get("limit")))
    return web.json_response({"items": [r.to_json() for r in rows]})


async def post_message_events(request: web.Request) -> web.Response:
    events = _events(request)
    body = await read_json(request)
    check_fields(body, required={"events": "array"}, optional={"account_id": "string"})
    account = _tenant_of_call(request, body.get("account_id"))
    return web.json_response(await events.post(account, body["events"]), status=202)


# -- endpoint health and recovery ----------------------------------------------------------


async def replay_delivery(request: web.Request) -> web.Response:
    """Send a DISPATCHED delivery again (same webhook-id), recorded as a replay attempt (409 otherwise)."""
    did, public = await _owned_delivery(request)
    _no_body(request)
    return web.json_response(_public_attempts([await request.app[ENGINE_KEY].replay(did)], public)[0])


async def recover_config(request: web.Request) -> web.Response:
    """Force-retry the configuration's FAILED deliveries matching since/until/reason, in creation order."""
    cid = await _owned_config(request)
    body = await read_json(request) if request.content_length else {}
    check_fields(body, optional={"since": "string?", "until": "string?", "reason": "string?", "status": "string"})
    if body.get("status", Status.FAILED.value) != Status.FAILED.value:
        raise Problem(400, "invalid", "status: only FAILED deliveries can be recovered (force retry)")
    ids = await request.app[ENGINE_KEY].force_retry_where(
        config_id=cid, since=_time_param("since", body.get("since")), until=_time_param("until", body.get("until")),
        reason=body.get("reason"))
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
    qs = _query(request, {"tenant_id", "config_id", "limit"})
    tenant = _tenant_filter(request, qs.get("tenant_id"))
    engine = request.app[ENGINE_KEY]
    if "config_id" in qs:
        items = await engine.notifications(await _owned_config(request, qs["config_id"]))
    else:
        items = await engine.notifications(tenant_id=tenant or None)
    items = [_notification_out(request, n) for n in items[-_limit(qs.get("limit")):]]
    return web.json_response({"items": items})


#: (method, path, handler): the one list the router and the OpenAPI test read.
ROUTES: list[tuple[str, str, _Handler]] = [
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/api/openapi.json", openapi),
    ("GET", "/api/tenants", list_tenants),
    ("POST", "/api/tenants", create_tenant),
    ("GET", "/api/tenants/{tenant_id}", get_tenant),
    ("GET", "/api/providers", list_providers),
    ("POST", "/api/providers", create_provider),
    ("GET", "/api/dispatch-configurations", list_configs),
    ("POST", "/api/dispatch-configurations", create_config),
    ("GET", "/api/dispatch-configurations/{config_id}", get_config),
    ("PATCH", "/api/dispatch-configurations/{config_id}", edit_config),
    ("DELETE", "/api/dispatch-configurations/{config_id}", delete_config),
    ("POST", "/api/dispatch-configurations/{config_id}/activate", activate_config),
    ("POST", "/api/dispatch-configurations/{config_id}/deactivate", deactivate_config),
    ("GET", "/api/activities", list_activities),
    ("POST", "/api/activities", create_activity),
    ("GET", "/api/activities/{activity_id}", get_activity),
    ("GET", "/api/activities/{activity_id}/deliveries", activity_deliveries),
    ("GET", "/api/deliveries/{delivery_id}", get_delivery),
    ("GET", "/api/deliveries/{delivery_id}/attempts", delivery_attempts),
    ("POST", "/api/deliveries/{delivery_id}/force-retry", force_retry),
    ("POST", "/api/deliveries/{delivery_id}/skip", skip_delivery),
    ("POST", "/api/deliveries/{delivery_id}/replay", replay_delivery),
    ("POST", "/api/dispatch-configurations/{config_id}/recover", recover_config),
    ("GET", "/api/dispatch-configurations/{config_id}/health", config_health),
    ("GET", "/api/notifications", list_notifications),
    ("POST", "/api/integration/activity-results/tasks", submit_result),
    ("GET", "/api/accounts/{account_id}/webhook", get_webhook),
    ("PUT", "/api/accounts/{account_id}/webhook", put_webhook),
    ("GET", "/api/accounts/{account_id}/event-batches", list_event_batches),
    ("POST", "/api/message-events", post_message_events),
]


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
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    mount_console(app, engine, keys)
    return app
