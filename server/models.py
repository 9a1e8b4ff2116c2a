"""The HTTP API's request and response models (pydantic v2): one source for validation and the OpenAPI document.

Every route's body, query and path parameters are checked against these models before a handler
runs, and ``server/openapi.py`` builds the OpenAPI document from the same classes, so the document
cannot say something the server does not check. The rules are the engine's: shapes come from its
declarations (the seed's activity in :mod:`dispatchsim.mapping.activity`, the message-event
parameters, the id pattern, the policy bounds), and every object the engine owns (retry, ordering,
timeouts, auth, circuit breaker, auto-disable, mapping, message events) is finally checked by the
engine's own parser inside the model, so a refusal names the field either way. Response models
document what the engine's ``to_json`` methods return; the policies' response shapes are the
engine's dataclasses themselves.

Request models are strict: JSON types are not coerced (``"5"`` is not a number, ``true`` is not 1).
Query parameters arrive as text and are parsed (``limit=50``) but only from plain digits.
"""
from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, WithJsonSchema, create_model, model_validator)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from dispatchsim.engine import (AUTH_FIELDS, AUTH_TYPES, CONFIG_FIELDS, EVENT_ONLY_WITH, EVENT_PARAMS,
                                EVENT_REQUIRED_WITH, EVENT_STATUSES, HEADER_NAME_PATTERN, ID_PATTERN, MAX_AGE,
                                MAX_ATTEMPTS, MAX_BATCH_SIZE, MAX_CONCURRENCY, MAX_DELAY, MAX_FACTOR, MAX_SCHEDULE,
                                MAX_TIMEOUT, PRESETS, Auth, AutoDisable, BatchPolicy, Circuit, CircuitBreaker,
                                ConfigError, OrderingPolicy, RetryPolicy, Status, Timeouts, auto_disable_from,
                                check_signing_secret, circuit_breaker_from, compile_mapping_spec, iso,
                                ordering_policy_from, parse_iso, retry_policy_from, timeouts_from, validate_event)
from dispatchsim.mapping.activity import (ACTIVITY_TYPES, NESTED_SHAPES, OBJECT_OR_NULL, PAYLOAD_KEYS, SEED_PAYLOAD,
                                          STRING_OR_NULL, TEXT, TIMESTAMPS, example_activity)

from .problems import field_problem

#: default and largest page of a listing
PAGE_DEFAULT, PAGE_MAX = 50, 500
#: a page cursor: ``a`` and the last activity seen, its id in base64url (opaque to callers)
CURSOR_PATTERN = r"^a[A-Za-z0-9_-]{1,400}$"
#: the ``format`` and an example of every timestamp on the wire (the engine writes milliseconds and Z)
EXAMPLE_TIME = "2026-04-10T14:30:00.000Z"


class RequestModel(BaseModel):
    """A request body: strict JSON types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ResponseModel(BaseModel):
    """A response body: every field present, nothing else (the fuzzer holds the server to it)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class QueryModel(BaseModel):
    """Query parameters (text on the wire, parsed); unknown ones refused."""

    model_config = ConfigDict(extra="forbid")


# -- field types ------------------------------------------------------------------------------


def _engine_rule(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run the engine's own parser on a value the model let through: its refusal (a ``ConfigError``
    naming its field) becomes this field's validation error, so there is one rule set, the engine's."""

    def check(value: Any) -> Any:
        try:
            parse(value)
        except ConfigError as exc:
            raise PydanticCustomError("engine_rule", "{message}", {"message": exc.message, "field": exc.field or ""}
                                      ) from None
        return value

    return check


def _instant(value: Any) -> float:
    if not isinstance(value, str):
        raise PydanticCustomError("date_time_type", "must be an ISO-8601 timestamp string")
    try:
        ts = parse_iso(value)
        iso(ts)  # the engine writes it back; a year beyond 9999 cannot be
    except (ValueError, OverflowError, OSError):
        raise PydanticCustomError("date_time", "not an ISO-8601 timestamp: {value}", {"value": repr(value)}) from None
    if not math.isfinite(ts):
        raise PydanticCustomError("date_time", "not an ISO-8601 timestamp: {value}", {"value": repr(value)})
    return ts


_DATE_TIME = {"type": "string", "format": "date-time", "examples": [EXAMPLE_TIME]}
#: An ISO-8601 / RFC 3339 timestamp in a request, read as epoch seconds.
Instant = Annotated[float, BeforeValidator(_instant), WithJsonSchema(_DATE_TIME)]
#: An ISO-8601 timestamp in a request that is passed on as text (after the engine's parser accepted it).
def _instant_text(value: str) -> str:
    _instant(value)
    return value


InstantText = Annotated[str, AfterValidator(_instant_text), WithJsonSchema(_DATE_TIME)]
#: A timestamp in a response (the engine's ``iso``: UTC, milliseconds, ``Z``).
Stamp = Annotated[str, Field(json_schema_extra={"format": "date-time", "examples": [EXAMPLE_TIME]})]
Identifier = Annotated[str, Field(pattern=ID_PATTERN, examples=["acme"],
                                  description="1-64 letters, digits, '_', '-', '.', ':' (starting with a letter or digit)")]
NonBlank = Annotated[str, Field(pattern=r"\S", min_length=1)]
Url = Annotated[str, Field(pattern=r"^https?://[^\s/?#]+", examples=["https://crm.example.com/hooks/dispatch"],
                           json_schema_extra={"format": "uri"},
                           description="an absolute http(s) URL")]


def _uuid_text(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise PydanticCustomError("uuid", "a UUID such as {example}, got {value}",
                                  {"example": str(uuid.UUID(int=1)), "value": repr(value)}) from None
    return value


Uuid = Annotated[str, AfterValidator(_uuid_text),
                 Field(json_schema_extra={"format": "uuid"}, examples=["a1b2c3d4-e5f6-7890-abcd-ef1234567890"])]


def _digits(value: Any) -> Any:
    """A count in a query string: plain decimal digits only (not ``+5``, ``5_0`` or `` 5``). A minus sign
    before them is a whole number too: it is let through to be refused by the range (``limit=-1`` was
    "must be a whole number", which it is)."""
    digits = value[1:] if isinstance(value, str) and value.startswith("-") else value
    if isinstance(value, str) and not (digits.isascii() and digits.isdigit()):
        raise PydanticCustomError("int_parsing", "must be a whole number, got {value}", {"value": repr(value)})
    return value


Limit = Annotated[int, Field(ge=1, le=PAGE_MAX, description=f"page size, 1-{PAGE_MAX}"), BeforeValidator(_digits)]


# -- engine-owned objects in requests ----------------------------------------------------------

Seconds = Annotated[float, Field(ge=0, le=MAX_DELAY)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_DELAY)]
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)]
PresetName = Literal[tuple(sorted(PRESETS))]  # type: ignore[valid-type]
OrderingMode = Literal["ordered", "partitioned", "none"]


def _not_2xx(code: int) -> int:
    if 200 <= code < 300:
        raise PydanticCustomError("status", "a status outside 2xx, got {code}", {"code": code})
    return code


FailureStatus = Annotated[int, Field(ge=100, le=599, json_schema_extra={"not": {"minimum": 200, "maximum": 299}}),
                          AfterValidator(_not_2xx)]


class RetryIn(TypedDict, total=False):
    """A retry policy: a preset plus overrides, exponential (base, factor, cap) or an explicit schedule.

    Checked as a whole by the engine: ``cap >= base``; ``repeat_last`` needs a ``schedule``; a schedule
    replaces base/factor/cap (docs/retries.md has the table of what each combination means)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]
    preset: Optional[PresetName]
    base: PositiveSeconds
    factor: Annotated[float, Field(ge=1, le=MAX_FACTOR)]
    cap: Seconds
    schedule: Optional[Annotated[list[Seconds], Field(min_length=1, max_length=MAX_SCHEDULE)]]
    repeat_last: bool
    max_attempts: Optional[Attempts]
    max_age: Optional[Annotated[float, Field(gt=0, le=MAX_AGE)]]
    jitter: Literal["none", "full", "equal"]
    seed: int
    retry_after_ceiling: Optional[Seconds]
    permanent_statuses: list[FailureStatus]


class OrderingIn(TypedDict, total=False):
    """How deliveries queue up: ``ordered`` (one queue per configuration), ``partitioned`` by a payload
    field (``partition_key`` required), or ``none`` (up to ``concurrency`` in flight)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]
    mode: OrderingMode
    on_exhausted: Literal["skip", "block"]
    partition_key: Optional[Annotated[str, Field(pattern=r"\S", examples=["commerceExternalId"])]]
    concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]


class TimeoutsIn(TypedDict, total=False):
    """HTTP timeouts in seconds; the engine checks ``connect <= total``."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]
    connect: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]
    total: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]


class CircuitBreakerIn(TypedDict, total=False):
    """Open the circuit when the share of failed attempts in ``window`` seconds reaches ``failure_rate``."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]
    window: PositiveSeconds
    failure_rate: Annotated[float, Field(gt=0, le=1)]
    min_requests: Attempts
    cooldown: PositiveSeconds


_Secret = Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$", json_schema_extra={"writeOnly": True})]


class AutoDisableIn(TypedDict, total=False):
    """Pause the configuration after ``after_failures`` failed attempts in a row and/or ``after`` seconds
    of failing (at least one of them); ``notify_url`` gets a signed operator webhook."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid", json_schema_extra={  # type: ignore[misc]
        "anyOf": [{"required": ["after_failures"], "properties": {"after_failures": {"type": "integer"}}},
                  {"required": ["after"], "properties": {"after": {"type": "number"}}}]})
    after_failures: Optional[Attempts]
    after: Optional[Annotated[float, Field(gt=0, le=MAX_AGE)]]
    notify_url: Optional[Url]
    notify_secret: Optional[Annotated[str, Field(min_length=1, json_schema_extra={"writeOnly": True})]]


def _auth_variant(kind: str) -> Any:
    """The request shape of one auth type, from the engine's table of required and optional fields."""
    required, optional = AUTH_FIELDS[kind]
    fields: dict[str, Any] = {"type": (Literal[kind], ...)}  # type: ignore[valid-type]
    for name in sorted((required | optional) - {"type"}):
        typ = Annotated[str, Field(pattern=HEADER_NAME_PATTERN, examples=["X-Api-Key"])] if name == "header" else _Secret
        fields[name] = (typ, ... if name in required else None)
    model = create_model(f"Auth{''.join(p.title() for p in kind.split('_'))}", __config__=ConfigDict(
        strict=True, extra="forbid", title=f"Auth {kind}"), **fields)
    return Annotated[model, Tag(_TAG + kind)]


#: marks a union's tag in pydantic's error locations (a field name never starts with it)
_TAG = "~"


def _auth_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return _TAG + kind if kind in AUTH_TYPES else None


AuthIn = Annotated[Union[tuple(_auth_variant(k) for k in AUTH_TYPES)],  # type: ignore[misc]
                   Discriminator(_auth_tag, custom_error_type="auth_type",
                                 custom_error_message=f"an object whose type is one of {', '.join(AUTH_TYPES)}"),
                   Field(description="credentials sent with every request; write-only (reads show ***)")]


def _dump_auth(value: Any) -> Any:
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


def _named_or_object(what: str, obj: Any, names: Any) -> Any:
    """``retry: reteno`` or ``retry: {...}``: one field, two shapes, one clear error for anything else."""

    def pick(value: Any) -> str | None:
        return _TAG + "name" if isinstance(value, str) else _TAG + "object" if isinstance(value, dict) else None

    return Annotated[Union[Annotated[names, Tag(_TAG + "name")], Annotated[obj, Tag(_TAG + "object")]],
                     Discriminator(pick, custom_error_type="name_or_object",
                                   custom_error_message=f"must be a {what} name (string) or an object or null")]


Retry = Annotated[_named_or_object("preset", RetryIn, PresetName), AfterValidator(_engine_rule(retry_policy_from)),
                  Field(description=f"a preset name ({', '.join(sorted(PRESETS))}) or a policy object")]
Ordering = Annotated[_named_or_object("mode", OrderingIn, OrderingMode),
                     AfterValidator(_engine_rule(ordering_policy_from))]
TimeoutsField = Annotated[TimeoutsIn, AfterValidator(_engine_rule(timeouts_from))]
CircuitBreakerField = Annotated[CircuitBreakerIn, AfterValidator(_engine_rule(circuit_breaker_from))]
AutoDisableField = Annotated[AutoDisableIn, AfterValidator(_engine_rule(auto_disable_from))]
AuthField = Annotated[AuthIn, AfterValidator(_engine_rule(lambda m: Auth.parse(_dump_auth(m))))]
MappingField = Annotated[dict[str, Any], AfterValidator(_engine_rule(compile_mapping_spec)),
                         Field(description="a payload mapping (docs/mapping.md); compiled and checked on save",
                               examples=[{"fields": {"task_id": "id", "shop": "commerceName"}}])]
SigningSecret = Annotated[str, AfterValidator(_engine_rule(check_signing_secret)),
                          Field(min_length=1, json_schema_extra={"writeOnly": True},
                                     description="signs each request (Standard Webhooks); whsec_<base64> or any "
                                                 "text; write-only", examples=["whsec_MDEyMzQ1Njc4OWFiY2RlZg=="])]


# -- request bodies ---------------------------------------------------------------------------


class RegisterIn(RequestModel):
    """A tenant or a provider to register (admin key)."""

    id: Identifier
    name: Optional[str] = Field(default=None, examples=["Acme Pharmacies"])


class _ConfigFields(RequestModel):
    endpoint_url: Url
    auth: Optional[AuthField] = None
    signing_secret: Optional[SigningSecret] = None
    mapping: Optional[MappingField] = None
    retry: Optional[Retry] = None
    ordering: Optional[Ordering] = None
    timeouts: Optional[TimeoutsField] = None
    circuit_breaker: Optional[CircuitBreakerField] = None
    auto_disable: Optional[AutoDisableField] = None


class ConfigIn(_ConfigFields):
    """A new dispatch configuration: tenant x provider x channel -> endpoint (inactive until activated)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "crm-hook", "provider_id": "crm", "channel": "SALESMAN",
        "endpoint_url": "https://crm.example.com/hooks/dispatch",
        "auth": {"type": "bearer", "token": "s3cr3t"}, "retry": "reten", "ordering": {"mode": "ordered"}}]})

    tenant_id: Optional[Identifier] = Field(default=None, description="admin key only: the tenant it is for")
    id: Optional[Identifier] = Field(default=None, description="a name within the tenant (default: derived)")
    provider_id: Identifier
    channel: NonBlank = Field(examples=["SALESMAN"])


class ConfigEdit(_ConfigFields):
    """Changes to a configuration: a new immutable version (deliveries keep theirs); at least one field."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "examples": [{"timeouts": {"connect": 2,
                                                                                                "total": 5}}]})

    endpoint_url: Url = Field(default=None, description="an absolute http(s) URL (not null)")  # type: ignore[assignment]

    @model_validator(mode="after")
    def _something(self) -> ConfigEdit:
        if not self.model_fields_set:
            raise PydanticCustomError("nothing_to_change", "nothing to change; send one or more of {fields}",
                                      {"fields": ", ".join(CONFIG_FIELDS)})
        return self


def _nested_model(name: str, shape: dict[str, Any], example: dict[str, Any]) -> Any:
    """A nested object of the seed's activity: each key a string (or a nested object) or null."""
    fields: dict[str, Any] = {}
    for key, kind in shape.items():
        typ = str if kind == TEXT else _nested_model(name + key[0].upper() + key[1:], kind, example[key])
        fields[key] = (Optional[typ], Field(default=None))
    return create_model(name, __config__=ConfigDict(strict=True, extra="forbid",
                                                    json_schema_extra={"examples": [example]}), **fields)


_NESTED = {key: _nested_model(key[0].upper() + key[1:], NESTED_SHAPES[key], SEED_PAYLOAD[key])
           for key in OBJECT_OR_NULL}


def _activity_fields(*, response: bool) -> dict[str, Any]:
    """The seed's activity fields in its order, from the one declaration in ``mapping.activity``."""
    out: dict[str, Any] = {}
    for key in PAYLOAD_KEYS:
        example = SEED_PAYLOAD[key]
        if key == "id":
            typ: Any = Uuid
        elif key == "type":
            typ = Literal[ACTIVITY_TYPES]  # type: ignore[valid-type]
        elif key == "channel":
            typ = NonBlank
        elif key in STRING_OR_NULL:
            typ = Optional[str]
        elif key in OBJECT_OR_NULL:
            typ = Optional[_NESTED[key]]
        elif key in TIMESTAMPS or key == "createdAt":
            typ = Optional[Stamp if response else InstantText]
        elif key == "canForceRetryDispatch":
            typ = bool
        else:  # activityResult
            typ = Optional[ActivityResult]
        if response:
            if key == "createdAt":
                typ = Stamp
            out[key] = (typ, Field(examples=[example] if example is not None else None))
        elif key in ("createdAt", "canForceRetryDispatch", "activityResult"):
            continue  # the engine's, not the caller's
        else:
            out[key] = (typ, Field(... if key == "channel" else None,
                                   examples=[example] if example is not None else None))
    return out


class ActivityResult(ResponseModel):
    """A provider's result for an activity (``POST /api/integration/activity-results/tasks``)."""

    status: str = Field(examples=["COMPLETED"])
    result: Optional[dict[str, Any]]
    completedAt: Optional[Stamp]
    comment: Optional[str]
    submittedAt: Stamp


class _ActivityRequest(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [example_activity(random.Random(1))]})


ActivityIn = create_model(
    "ActivityIn", __base__=_ActivityRequest, __doc__="A new activity in the seed's shape (only channel is required). "
    "id is optional: a UUID chosen by the caller makes retries safe (a duplicate is a 409).",
    **_activity_fields(response=False))
Activity = create_model("Activity", __base__=ResponseModel,
                        __doc__="An activity exactly as it is dispatched: the seed's JSON, field for field.",
                        **_activity_fields(response=True))


class ResultIn(RequestModel):
    """A provider's result for an activity it received; ``activity_id`` is the payload's ``id``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "activity_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "status": "COMPLETED",
        "result": {"outcome": "VISITED"}, "completedAt": EXAMPLE_TIME, "comment": "done"}]})

    activity_id: Uuid
    status: NonBlank = Field(examples=["COMPLETED"])
    result: Optional[dict[str, Any]] = None
    completedAt: Optional[InstantText] = None
    comment: Optional[str] = None


def _only_failed(value: Any) -> Any:
    if value != "FAILED":
        raise PydanticCustomError("only_failed", "only FAILED deliveries can be recovered (force retry), got {value}",
                                  {"value": repr(value)[:60]})
    return value


class RecoverIn(RequestModel):
    """Which FAILED deliveries of the configuration to force-retry (all of them when empty)."""

    since: Optional[Instant] = None
    until: Optional[Instant] = None
    reason: Optional[str] = Field(default=None, description="failed reason: exhausted, permanent_status, "
                                                            "mapping_error", examples=["exhausted"])
    status: Annotated[Literal["FAILED"], BeforeValidator(_only_failed)] = "FAILED"


class WebhookIn(RequestModel):
    """An account's Reteno message-event webhook; saving it sends a test GET that must answer 2xx."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"url": "https://crm.example.com/hooks/events",
                                                               "batch_size": 100, "max_wait": 60}]})

    url: Url
    auth: Optional[AuthField] = None
    signing_secret: Optional[SigningSecret] = None
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] = 100
    max_wait: Annotated[float, Field(ge=0, le=86400)] = 60.0
    retry: Optional[Retry] = None
    timeouts: Optional[TimeoutsField] = None
    circuit_breaker: Optional[CircuitBreakerField] = None
    auto_disable: Optional[AutoDisableField] = None


_EVENT_TYPES: dict[str, Any] = {"string": str, "int": int, "bool": bool,
                                "data": Union[dict[str, Any], list[Any]], "strings": list[str],
                                "int_or_string": Union[int, str]}


def _event_variant(status: str) -> Any:
    """The parameters of an event with one ``activityStatus``, from the engine's table of the seed's list."""
    fields: dict[str, Any] = {"activityStatus": (Literal[status], ...)}  # type: ignore[valid-type]
    for name, kind in EVENT_PARAMS.items():
        if name == "activityStatus" or EVENT_ONLY_WITH.get(name, status) != status:
            continue
        typ = _EVENT_TYPES[kind]
        fields[name] = (typ, ...) if name in EVENT_REQUIRED_WITH.get(status, ()) else (Optional[typ], None)
    model = create_model(f"Event{status.title().replace('_', '')}",
                         __config__=ConfigDict(strict=True, extra="forbid", title=f"{status} event"), **fields)
    return Annotated[model, Tag(_TAG + status)]


def _event_tag(value: Any) -> str | None:
    status = value.get("activityStatus") if isinstance(value, dict) else None
    return _TAG + status if status in EVENT_STATUSES else None


def _event_rule(value: Any) -> Any:
    raw = value.model_dump(exclude_unset=True)
    _, problems = validate_event(raw, now=0.0)
    if problems:
        raise PydanticCustomError("engine_rule", "{message}", {"message": "; ".join(problems), "field": ""})
    return value


MessageEvent = Annotated[Union[tuple(_event_variant(s) for s in EVENT_STATUSES)],  # type: ignore[misc]
                         Discriminator(_event_tag, custom_error_type="event_status", custom_error_message=(
                             f"an object whose activityStatus is one of {', '.join(EVENT_STATUSES)}")),
                         AfterValidator(_event_rule)]


class MessageEventsIn(RequestModel):
    """Reteno message events for the account's webhook, all or nothing."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [
        {"activityStatus": "DELIVERED", "contactId": 42, "messageId": 7},
        {"activityStatus": "CLICKED", "contactId": 42, "clickEventLink": "https://shop.example.com/offer"}]}]})

    account_id: Optional[Identifier] = Field(default=None, description="admin key only: the account (a tenant)")
    events: list[MessageEvent] = Field(min_length=1, max_length=MAX_BATCH_SIZE)


# -- query and path parameters ----------------------------------------------------------------


class NoQuery(QueryModel):
    """No query parameters."""


class TenantQuery(QueryModel):
    tenant_id: Optional[Identifier] = Field(default=None, description="admin key only: one tenant")


class ActivitiesQuery(TenantQuery):
    channel: Optional[str] = Field(default=None, examples=["SALESMAN"])
    status: Optional[str] = Field(default=None, description="the payload status", examples=["PENDING"])
    dispatch_status: Optional[Status] = Field(default=None, description="activities with a delivery in this status")
    created_from: Optional[Instant] = Field(default=None, description="created at or after (inclusive)")
    created_to: Optional[Instant] = Field(default=None, description="created before (exclusive)")
    cursor: Optional[str] = Field(default=None, pattern=CURSOR_PATTERN, description="next_cursor of the previous page",
                                  examples=["aMGE1YzYyZDMtNGQ3OS00YjM2LThkNjctY2U3NGQ2ZTk3Y2Rm"])
    limit: Limit = PAGE_DEFAULT


class NotificationsQuery(TenantQuery):
    config_id: Optional[Identifier] = Field(default=None, description="one configuration")
    limit: Limit = PAGE_DEFAULT


class BatchesQuery(QueryModel):
    after: Optional[str] = Field(default=None, min_length=1, max_length=64,
                                 description="the id of the last batch seen (none: from the start)",
                                 examples=["evb_5f0c2a9d1e7b3c4a8d6e2f10"])
    limit: Limit = PAGE_DEFAULT


# path parameters: text; what does not name an existing thing of the caller is a 404
class ConfigPath(QueryModel):
    config_id: str = Field(min_length=1, description="the configuration's name (the admin: its stored id)",
                           examples=["crm-hook"])


class TenantPath(QueryModel):
    tenant_id: str = Field(min_length=1, examples=["acme"])


class ActivityPath(QueryModel):
    activity_id: str = Field(min_length=1, description="the activity's id (a UUID)",
                             examples=["a1b2c3d4-e5f6-7890-abcd-ef1234567890"])


class DeliveryPath(QueryModel):
    delivery_id: str = Field(min_length=1, description="the delivery's public id (its webhook-id)",
                             examples=["msg_2bQd7xUq0yJm4Vf8cN1pLr3T"])


class AssetPath(QueryModel):
    asset: str = Field(min_length=1, description="a file of the reference page", examples=["swagger-ui.css"])


class AccountPath(QueryModel):
    account_id: str = Field(min_length=1, description="the account (a tenant id)", examples=["acme"])


# -- responses --------------------------------------------------------------------------------


class ProblemOut(BaseModel):
    """An RFC 9457 problem document: every error answer."""

    model_config = ConfigDict(extra="allow", title="Problem", json_schema_extra={"examples": [{
        "type": "https://dispatchsim.dev/problems/invalid", "title": "Bad Request", "status": 400,
        "detail": "invalid body: channel: must be a string, got integer", "instance": "/api/activities",
        "field": "channel", "errors": [{"field": "channel", "message": "must be a string, got integer"}]}]})

    type: str
    title: str
    status: int
    detail: str
    instance: str
    field: Optional[str] = Field(default=None, description="the first field at fault")
    errors: Optional[list[FieldError]] = Field(default=None, description="every field at fault")


class FieldError(BaseModel):
    """One refused field: a dotted path within the body, or a query or path parameter's name."""

    model_config = ConfigDict(extra="forbid")
    field: str
    message: str


ProblemOut.model_rebuild()


class Health(ResponseModel):
    status: Literal["ok"]
    uptime: float = Field(description="seconds since start")
    in_flight: int = Field(ge=0)


class Ready(ResponseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(examples=[{"database": "ok", "migrations": "ok", "dispatcher": "ok"}])


class Registered(ResponseModel):
    """A tenant or a provider."""

    id: str
    name: str
    created_at: Stamp


class RegisteredList(ResponseModel):
    items: list[Registered]


class AuthOut(ResponseModel):
    """Credentials as reads show them: secrets replaced by ***."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)
    type: Literal[AUTH_TYPES]  # type: ignore[valid-type]
    header: Optional[str] = None
    value: Optional[str] = None
    token: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None


class _SettingsOut(ResponseModel):
    retry: RetryPolicy
    timeouts: Timeouts
    circuit_breaker: Optional[CircuitBreaker]
    auto_disable: Optional[AutoDisable]


class DispatchConfiguration(_SettingsOut):
    """A configuration as every read shows it (secrets ***); a create or edit adds ``warnings``."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)
    id: str = Field(examples=["crm-hook"])
    tenant_id: str
    provider_id: Optional[str]
    channel: Optional[str]
    version: int = Field(ge=1)
    active: bool
    inactive_reason: Optional[str]
    inactive_since: Optional[Stamp]
    created_at: Stamp
    updated_at: Stamp
    endpoint_url: str
    auth: AuthOut
    signing_secret: Optional[str]
    mapping: Optional[dict[str, Any]]
    mapping_digest: Optional[str]
    ordering: OrderingPolicy
    batching: Optional[BatchPolicy] = Field(default=None, description="message-event webhooks only")
    warnings: Optional[list[str]] = Field(default=None, description="mapping warnings (create and edit only)")


class ConfigList(ResponseModel):
    items: list[DispatchConfiguration]


class ActivityPage(ResponseModel):
    items: list[Activity]  # type: ignore[valid-type]
    next_cursor: Optional[str] = Field(description="pass as cursor for the next page; null on the last")


class Delivery(ResponseModel):
    """One activity (or batch of message events) for one configuration."""

    id: str = Field(description="the public id, also sent as webhook-id", examples=["msg_2bQd7xUq0yJm4Vf8cN1pLr3T"])
    webhook_id: str
    activity_id: Optional[str]
    batch_id: Optional[str] = Field(description="when it sends message events: the batch's id (its webhook-id)")
    config_id: str
    config_version: int
    queue: str
    status: Status
    attempts: int = Field(ge=0)
    budget_attempts: int = Field(ge=0)
    next_attempt_at: Optional[Stamp]
    in_flight: bool
    blocks_queue: bool
    failed_reason: Optional[str]
    last_error: Optional[str]
    dispatched_at: Optional[Stamp]
    created_at: Stamp
    canForceRetryDispatch: bool


class DeliveryList(ResponseModel):
    items: list[Delivery]


class Attempt(ResponseModel):
    """One HTTP try (or a replay) of a delivery."""

    id: str = Field(description="<delivery id>.<number>")
    delivery_id: str
    number: int = Field(ge=1)
    started_at: Stamp
    finished_at: Optional[Stamp]
    status_code: Optional[int]
    outcome: Optional[str] = Field(examples=["SUCCESS"])
    error: Optional[str]
    retry_after: Optional[float]
    latency: Optional[float] = Field(description="seconds")
    excerpt: Optional[str] = Field(description="the start of the response body, secrets scrubbed")
    next_attempt_at: Optional[Stamp]
    replay: bool


class AttemptList(ResponseModel):
    items: list[Attempt]


class Recovered(ResponseModel):
    config_id: str
    count: int = Field(ge=0)
    requeued: list[str] = Field(description="public ids of the deliveries put back to READY, in creation order")


class Notification(ResponseModel):
    """An operator notification; the admin also sees its sequence number ``id``."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)
    id: Optional[int] = None
    at: Stamp
    kind: Literal["circuit.opened", "circuit.half_open", "circuit.closed", "config.auto_disabled"]
    config_id: Optional[str]
    message: str
    delivery: Optional[str] = Field(description="the operator webhook's outcome, e.g. HTTP 200")


class NotificationList(ResponseModel):
    items: list[Notification]


class EndpointHealth(ResponseModel):
    config_id: str
    active: bool
    inactive_reason: Optional[str]
    inactive_since: Optional[Stamp]
    circuit: Circuit
    circuit_until: Optional[Stamp]
    consecutive_failures: int = Field(ge=0)
    failing_since: Optional[Stamp]
    notifications: list[Notification]


class Webhook(_SettingsOut):
    """An account's message-event webhook (secrets ***) and how many events are in each state."""

    account_id: str
    url: str
    auth: AuthOut
    signing_secret: Optional[str]
    batch_size: int
    max_wait: float
    config_id: str
    version: int
    active: bool
    inactive_reason: Optional[str]
    updated_at: Stamp
    counts: dict[str, int]


class EventBatch(ResponseModel):
    """A batch of message events and the state of the delivery that sends it."""

    id: str = Field(description="the batch's public id: the webhook-id of the delivery that sends it (also a "
                                "delivery id for /api/deliveries/{id})", examples=["evb_5f0c2a9d1e7b3c4a8d6e2f10"])
    account_id: str
    status: Status
    size: int
    attempts: int
    next_attempt_at: Optional[Stamp]
    lease_until: Optional[Stamp]
    last_error: Optional[str]
    dispatched_at: Optional[Stamp]
    created_at: Stamp
    updated_at: Stamp


class EventBatchList(ResponseModel):
    items: list[EventBatch]


class EventsAccepted(ResponseModel):
    account_id: str
    accepted: int = Field(ge=1)


# -- validating -------------------------------------------------------------------------------


def json_type(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


_PLAIN = {"string_type": "must be a string", "int_type": "must be an integer", "float_type": "must be a number",
          "bool_type": "must be true or false", "list_type": "must be an array", "dict_type": "must be an object",
          "model_type": "must be an object", "model_attributes_type": "must be an object",
          "typed_dict_type": "must be an object", "none_required": "must be null"}


def _message(err: Any, known: list[str]) -> str:
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return f"unknown field (known: {', '.join(known)})" if known and len(err["loc"]) == 1 else "unknown field"
    if kind in _PLAIN:
        return f"{_PLAIN[kind]}, got {json_type(given)}"
    if kind in ("name_or_object", "auth_type", "event_status"):
        return f"{err['msg']}, got {json_type(given) if not isinstance(given, (str, dict)) else repr(given)[:60]}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '')}, got {given!r}"[:300]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {given!r}"
    if kind == "string_pattern_mismatch":
        return f"does not match {ctx.get('pattern')}"
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return err["msg"].replace("Value should", "must").replace("String should", "must").replace("List should",
                                                                                                  "must")
    return err["msg"]


def _where(loc: tuple[Any, ...], err: Any) -> str:
    """A dotted field from pydantic's location, without the union tags it adds."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif isinstance(part, str) and part.startswith(_TAG):
            continue
        else:
            parts.append(("." if parts else "") + str(part))
    dotted = "".join(parts).lstrip(".")
    engine_field = (err.get("ctx") or {}).get("field") or ""
    if engine_field.startswith(dotted + ".") or (not dotted and engine_field):
        dotted = engine_field  # the engine named a field deeper inside (auth.type)
    return dotted


def errors_of(exc: ValidationError, known: list[str]) -> list[tuple[str, str]]:
    """(field, message) for every problem pydantic found, in order, each once; ``known`` are the
    top-level fields (named when an unknown one is refused)."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        item = (_where(err["loc"], err), _message(err, known))
        if item not in out:
            out.append(item)
    return out


def parse(model: type[BaseModel], data: Any, where: str) -> Any:
    """``data`` checked against ``model``; a problem naming every field at fault otherwise: 400 when
    the request does not have the documented shape, 422 when it has but the engine's rules refuse it
    (a cap below the base, a mapping that does not compile: what a JSON Schema cannot say)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = errors_of(exc, list(model.model_fields))
        if all(err["type"] == "engine_rule" for err in exc.errors(include_url=False)):
            raise field_problem(422, where, errors, slug="refused") from None
        raise field_problem(400, where, errors) from None


def parse_query(model: type[BaseModel], query: Any) -> Any:
    """The query string against ``model``: each parameter once, known ones only."""
    twice = sorted({k for k in query if len(query.getall(k)) > 1})
    if twice:
        raise field_problem(400, "query", [(k, "given more than once") for k in twice])
    return parse(model, {k: query[k] for k in query}, "query")

