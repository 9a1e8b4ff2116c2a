"""The OpenAPI 3.1 description served at ``/api/openapi.json`` (written by hand; a test checks it
against the real routes: every route documented, every documented operation routed)."""
from __future__ import annotations

from typing import Any

from dispatchsim.engine import CONFIG_FIELDS, VERSION, Circuit, Status


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_PROBLEM = {"description": "problem document",
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}
_ERRORS = {"400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM, "404": _PROBLEM, "413": _PROBLEM}


def _op(summary: str, *, ok: str = "200", schema: dict[str, Any] | None = None, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, public: bool = False, extra: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "responses": {ok: _json(schema) if schema else {"description": "done"},
                                        **({} if public else _ERRORS), **(extra or {})}}
    if body is not None:
        op["requestBody"] = _body(body)
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _qp(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _list(item: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": _ref(item)}}}


_STATUSES = [s.value for s in Status]


def openapi_document() -> dict[str, Any]:
    cfg_write = {"type": "object", "additionalProperties": False, "properties": {
        "tenant_id": {"type": "string", "description": "admin key only; a tenant key writes its own tenant"},
        "id": {"type": "string"}, "provider_id": {"type": "string"}, "channel": {"type": "string"},
        "endpoint_url": {"type": "string", "format": "uri"},
        "auth": {"type": ["object", "null"], "description": "{type: none|api_key|bearer|basic, …}; write-only"},
        "signing_secret": {"type": ["string", "null"], "description": "write-only"},
        "mapping": {"type": ["object", "null"]}, "retry": {"type": ["object", "null"]},
        "ordering": {"type": ["object", "null"]}, "timeouts": {"type": ["object", "null"]}},
        "required": ["provider_id", "channel", "endpoint_url"]}
    for name in CONFIG_FIELDS:  # fields the engine grows later are objects validated by the engine
        cfg_write["properties"].setdefault(name, {"type": ["object", "null"]})
    cfg_edit = {**cfg_write, "required": [],
                "properties": {k: v for k, v in cfg_write["properties"].items()
                               if k not in ("tenant_id", "id", "provider_id", "channel")}}
    cid, aid, did, acc = (_path("config_id"), _path("activity_id"), _path("delivery_id"),
                          _path("account_id"))
    paths: dict[str, dict[str, Any]] = {
        "/healthz": {"get": _op("liveness and database check", public=True)},
        "/metrics": {"get": {"summary": "Prometheus text (prometheus_client): activities, deliveries, "
                                        "transitions, attempts by outcome, attempt latency and dispatch lag "
                                        "histograms, requests by route", "security": [],
                             "responses": {"200": {"description": "Prometheus text exposition format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/readyz": {"get": _op("readiness: database reachable, migrations current, dispatcher running "
                               "(503 problem document otherwise)", public=True, extra={"503": _PROBLEM})},
        "/api/openapi.json": {"get": _op("this document", public=True)},
        "/api/tenants": {
            "get": _op("tenants (a tenant key sees its own)", schema=_list("Tenant")),
            "post": _op("create a tenant (admin key)", ok="201", schema=_ref("Tenant"),
                        body={"type": "object", "required": ["id"], "additionalProperties": False,
                              "properties": {"id": {"type": "string"}, "name": {"type": ["string", "null"]}}})},
        "/api/tenants/{tenant_id}": {"get": _op("one tenant", schema=_ref("Tenant"), params=[_path("tenant_id")])},
        "/api/providers": {
            "get": _op("providers (registered centrally)", schema=_list("Tenant")),
            "post": _op("register a provider (admin key)", ok="201", schema=_ref("Tenant"),
                        body={"type": "object", "required": ["id"], "additionalProperties": False,
                              "properties": {"id": {"type": "string"}, "name": {"type": ["string", "null"]}}})},
        "/api/dispatch-configurations": {
            "get": _op("dispatch configurations (secrets shown as ***)", schema=_list("DispatchConfiguration"),
                       params=[_qp("tenant_id", "admin key only")]),
            "post": _op("create a configuration (inactive until activated)", ok="201",
                        schema=_ref("DispatchConfiguration"), body=cfg_write)},
        "/api/dispatch-configurations/{config_id}": {
            "get": _op("one configuration", schema=_ref("DispatchConfiguration"), params=[cid]),
            "patch": _op("edit: a new immutable version; deliveries keep theirs", schema=_ref("DispatchConfiguration"),
                         body=cfg_edit, params=[cid], extra={"422": _PROBLEM}),
            "delete": _op("delete", ok="204", params=[cid])},
        "/api/dispatch-configurations/{config_id}/activate": {
            "post": _op("verification GET to the endpoint; a non-2xx refuses activation (422 with reason)",
                        schema=_ref("DispatchConfiguration"), params=[cid], extra={"422": _PROBLEM})},
        "/api/dispatch-configurations/{config_id}/deactivate": {
            "post": _op("no new deliveries", schema=_ref("DispatchConfiguration"), params=[cid])},
        "/api/activities": {
            "get": _op("activities, oldest first, with a cursor", schema={
                "type": "object", "properties": {"items": {"type": "array", "items": _ref("Activity")},
                                                 "next_cursor": {"type": ["string", "null"]}}},
                params=[_qp("tenant_id", "admin key only"), _qp("channel", "e.g. SALESMAN"),
                        _qp("status", "the payload status, e.g. PENDING"),
                        _qp("dispatch_status", "activities with a delivery in this status",
                            {"type": "string", "enum": _STATUSES}),
                        _qp("created_from", "ISO-8601, inclusive"), _qp("created_to", "ISO-8601, exclusive"),
                        _qp("cursor", "next_cursor of the previous page"),
                        _qp("limit", "1-500, default 50", {"type": "integer"})]),
            "post": _op("create an activity and fan it out to the active configurations", ok="201",
                        schema=_ref("Activity"), body={"type": "object"},
                        params=[_qp("tenant_id", "admin key only")])},
        "/api/activities/{activity_id}": {"get": _op("one activity: exactly the payload dispatched",
                                                     schema=_ref("Activity"), params=[aid])},
        "/api/activities/{activity_id}/deliveries": {"get": _op("its deliveries", schema=_list("Delivery"),
                                                                params=[aid])},
        "/api/deliveries/{delivery_id}": {"get": _op("one delivery", schema=_ref("Delivery"), params=[did])},
        "/api/deliveries/{delivery_id}/attempts": {"get": _op("every HTTP try", schema=_list("Attempt"),
                                                              params=[did])},
        "/api/deliveries/{delivery_id}/force-retry": {
            "post": _op("FAILED -> READY with a fresh budget (409 otherwise)", schema=_ref("Delivery"), params=[did],
                        extra={"409": _PROBLEM})},
        "/api/deliveries/{delivery_id}/skip": {
            "post": _op("let a queue blocked by this FAILED head move on", schema=_ref("Delivery"), params=[did],
                        extra={"409": _PROBLEM})},
        "/api/deliveries/{delivery_id}/replay": {
            "post": _op("send a DISPATCHED delivery again (same webhook-id), recorded as a replay attempt; its"
                        " status and counters never change (409 unless DISPATCHED)", schema=_ref("Attempt"),
                        params=[did], extra={"409": _PROBLEM, "422": _PROBLEM})},
        "/api/dispatch-configurations/{config_id}/recover": {
            "post": _op("force-retry the configuration's FAILED deliveries created in [since, until] (and with this"
                        " failed reason), in creation order; no body: all of them", params=[cid],
                        schema={"type": "object", "properties": {
                            "config_id": {"type": "string"}, "count": {"type": "integer"},
                            "requeued": {"type": "array", "items": {"type": "integer"}}}},
                        body={"type": "object", "additionalProperties": False, "properties": {
                            "since": {"type": ["string", "null"], "format": "date-time"},
                            "until": {"type": ["string", "null"], "format": "date-time"},
                            "reason": {"type": ["string", "null"],
                                       "description": "failed reason: exhausted, permanent_status, mapping_error"},
                            "status": {"type": "string", "enum": [Status.FAILED.value]}}})},
        "/api/dispatch-configurations/{config_id}/health": {
            "get": _op("circuit state, failure streak, active flag (auto-disable reason and time) and the"
                       " configuration's notifications", params=[cid], schema=_ref("EndpointHealth"))},
        "/api/notifications": {
            "get": _op("operator notifications (circuit.opened, circuit.closed, config.auto_disabled) of your"
                       " configurations, oldest first; the latest `limit`", schema=_list("Notification"),
                       params=[_qp("tenant_id", "admin key only"), _qp("config_id", "one configuration"),
                               _qp("limit", "1-500, default 50", {"type": "integer"})])},
        "/api/integration/activity-results/tasks": {
            "post": _op("submit a result; fills activityResult. Same result again: 200; a different one: 409",
                        ok="201", schema=_ref("Activity"), extra={"200": _json(_ref("Activity")), "409": _PROBLEM},
                        body={"type": "object", "required": ["activity_id", "status"], "additionalProperties": False,
                              "properties": {"activity_id": {"type": "string", "format": "uuid"},
                                             "status": {"type": "string"}, "result": {"type": ["object", "null"]},
                                             "completedAt": {"type": ["string", "null"], "format": "date-time"},
                                             "comment": {"type": ["string", "null"]}}})},
        "/api/accounts/{account_id}/webhook": {
            "get": _op("the account's message-event webhook (secrets ***) and batch counts", params=[acc]),
            "put": _op("save the webhook; a test GET must answer 2xx (422 with reason otherwise)", params=[acc],
                       extra={"422": _PROBLEM},
                       body={"type": "object", "required": ["url"], "additionalProperties": False,
                             "properties": {"url": {"type": "string"}, "auth": {"type": ["object", "null"]},
                                            "signing_secret": {"type": ["string", "null"]},
                                            "batch_size": {"type": "integer", "minimum": 1, "maximum": 1000},
                                            "max_wait": {"type": "number"}, "retry": {"type": ["object", "null"]},
                                            "timeouts": {"type": ["object", "null"]},
                                            "circuit_breaker": {"type": ["object", "null"]},
                                            "auto_disable": {"type": ["object", "null"]}}})},
        "/api/accounts/{account_id}/event-batches": {
            "get": _op("batches sent or waiting, in order", params=[acc, _qp("after", "batch id", {"type": "integer"}),
                                                                      _qp("limit", "1-500", {"type": "integer"})])},
        "/api/message-events": {
            "post": _op("queue Reteno message events for the account's webhook (all or nothing)", ok="202",
                        body={"type": "object", "required": ["events"], "additionalProperties": False,
                              "properties": {"account_id": {"type": "string"},
                                             "events": {"type": "array", "items": _ref("MessageEvent"),
                                                        "maxItems": 1000}}})},
    }
    schemas = {
        "Problem": {"type": "object", "properties": {k: {"type": t} for k, t in (
            ("type", "string"), ("title", "string"), ("status", "integer"), ("detail", "string"),
            ("instance", "string"))}},
        "Tenant": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                                    "created_at": {"type": "string"}}},
        "DispatchConfiguration": {"type": "object", "description": "secrets replaced by ***"},
        "Activity": {"type": "object", "description": "the Reten seed's activity payload, field for field",
                     "properties": {"id": {"type": "string", "format": "uuid"}, "type": {"enum": ["TASK", "MESSAGE"]},
                                    "channel": {"type": "string"}, "canForceRetryDispatch": {"type": "boolean"},
                                    "activityResult": {"type": ["object", "null"]}}},
        "Delivery": {"type": "object", "properties": {"id": {"type": "integer"},
                                                      "status": {"type": "string", "enum": _STATUSES}}},
        "Attempt": {"type": "object"},
        "Notification": {"type": "object", "properties": {
            "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
            "kind": {"enum": ["circuit.opened", "circuit.closed", "config.auto_disabled"]},
            "config_id": {"type": ["string", "null"]}, "message": {"type": "string"},
            "delivery": {"type": ["string", "null"], "description": "operator webhook outcome, e.g. HTTP 200"}}},
        "EndpointHealth": {"type": "object", "properties": {
            "config_id": {"type": "string"}, "active": {"type": "boolean"},
            "inactive_reason": {"type": ["string", "null"]},
            "inactive_since": {"type": ["string", "null"], "format": "date-time"},
            "circuit": {"enum": [c.value for c in Circuit]},
            "circuit_until": {"type": ["string", "null"], "format": "date-time"},
            "consecutive_failures": {"type": "integer"},
            "failing_since": {"type": ["string", "null"], "format": "date-time"},
            "notifications": {"type": "array", "items": _ref("Notification")}}},
        "MessageEvent": {"type": "object", "required": ["activityStatus"], "description": "the Reteno seed's parameters",
                         "properties": {"activityStatus": {"enum": ["DELIVERED", "UNDELIVERED", "READ", "CLICKED",
                                                                    "UNSUBSCRIBED", "SPAM", "SUBSCRIPTION_CHANGED"]},
                                        "statusDescription": {"type": "string"}, "hardBounce": {"type": "boolean"},
                                        "clickEventLink": {"type": "string"}, "contactId": {"type": "integer"},
                                        "activityDateTime": {"type": "string"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "dispatchsim serve", "version": VERSION,
                 "description": "Dispatch engine API: tenants, providers, dispatch configurations, activities,"
                                " deliveries, results, and Reteno message-event webhooks."},
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "components": {"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                                           "Bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": schemas},
        "paths": paths,
    }
