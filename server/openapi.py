"""The OpenAPI 3.1 document served at ``/api/openapi.json``, generated from the routes and their models.

Nothing here is written by hand but the prose: each :class:`Operation` names the models of its body,
query and path parameters and its success answer (``server/models.py``), the same classes that
validate the requests, and the JSON Schemas come from pydantic. The error answers an operation can
give follow from what it takes (a body can be too large, a path names something that may not exist,
a POST may carry an ``Idempotency-Key``) and from what it declares (``errors``).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from dispatchsim.engine import VERSION

from . import models
from .idempotency import HEADER as IDEMPOTENCY_HEADER, MAX_KEY_LENGTH
from .problems import PROBLEM_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REF = "#/components/schemas/{model}"
#: what each error status means, for every operation that can answer it
_MEANING = {400: "invalid request: every field at fault is named (errors[].field)",
            401: "missing or invalid API key", 403: "the key may not do this", 404: "not found (or not yours)",
            409: "conflict with the current state", 413: "request body too large",
            415: "not a JSON body", 422: "well-formed but refused (see detail)",
            503: "storage unavailable (Retry-After) or not ready"}


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema, without a title on every property (the name says it), in the order the
    models are written, and with every field of the engine's dataclasses required in responses (their
    ``to_dict`` always writes all)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value  # keep the order written: examples in the seed's field order

    def dataclass_args_schema(self, schema: core_schema.DataclassArgsSchema) -> JsonSchemaValue:
        out = super().dataclass_args_schema(schema)
        if self.mode == "serialization":
            out["required"] = list(out.get("properties", {}))
        return out


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a value or absent, never JSON null (a query string cannot say null)."""
    options = prop.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        prop = {**(rest[0] if len(rest) == 1 else {"anyOf": rest}),
                **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}
    return prop


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and answers. The router, the validation and the document read it."""

    method: str
    path: str
    handler: Handler
    summary: str
    #: the success status and the model of its body (None: no body, e.g. 204)
    ok: int = 200
    response: Any = None
    body: type[BaseModel] | None = None
    #: False: the body may be left out (an empty body means "all defaults")
    body_required: bool = True
    query: type[BaseModel] = models.NoQuery
    path_params: type[BaseModel] | None = None
    #: error statuses beyond those that follow from the inputs (409 on a state conflict, 403 admin-only …)
    errors: tuple[int, ...] = ()
    public: bool = False
    #: other success answers: status -> model
    also: tuple[tuple[int, Any], ...] = ()
    #: the body is not JSON: (content type, schema) for each type it may have
    content: tuple[tuple[str, dict[str, Any]], ...] = ()
    tag: str = "api"
    #: OpenAPI links from the success answer: (name, operationId, {parameter: runtime expression}),
    #: e.g. a created activity's id to ``get_activity`` (clients and the fuzzer's stateful phase follow them)
    links: tuple[tuple[str, str, dict[str, str]], ...] = ()

    def statuses(self) -> list[int]:
        """Every error status this operation can answer, in order."""
        out = set(self.errors)
        if not self.public:
            out |= {400, 401, 503}
        if self.body is not None:
            out |= {400, 413, 415}
        if self.path_params is not None:
            out.add(404)
        if self.method == "POST" and not self.public:
            out |= {409, 422}  # Idempotency-Key: the first request still runs / the key was used for another
        return sorted(out)


def _problem() -> dict[str, Any]:
    return {"content": {PROBLEM_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}}}


def _parameters(op: Operation, schemas: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    params = []
    for where, model in (("path", op.path_params), ("query", op.query)):
        if model is None:
            continue
        schema = schemas[(model, "validation")]
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[1]]
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            prop = _query_schema(dict(prop))
            description = prop.pop("description", None)
            param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required,
                                     "schema": prop}
            if description:
                param["description"] = description
            params.append(param)
    if op.method == "POST" and not op.public:
        params.append({"name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
                       "description": "run this POST at most once per key (kept a day): the same request again "
                                      "gets the first answer; another request with the key is a 422",
                       "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH,
                                  "pattern": "^[\\x20-\\x7e]+$"}})
    return params


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def build_document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``; component schemas are the models, by class name."""
    wanted: list[tuple[Any, str]] = [(models.ProblemOut, "serialization")]
    for op in operations:
        for model, mode in ((op.body, "validation"), (op.query, "validation"), (op.path_params, "validation"),
                            (op.response, "serialization"), *((m, "serialization") for _, m in op.also)):
            if model is not None and (model, mode) not in wanted:
                wanted.append((model, mode))
    schemas, top = models_json_schema(wanted, ref_template=REF, schema_generator=_Schemas)
    defs: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        for status, model in ((op.ok, op.response), *op.also):
            if op.content:
                responses[str(status)] = {"description": "OK",
                                          "content": {ctype: {"schema": schema} for ctype, schema in op.content}}
            elif model is None:
                responses[str(status)] = {"description": "done (no body)"}
            else:
                responses[str(status)] = {"description": "OK", **_json_body(schemas[(model, "serialization")])}
            if op.links and status == op.ok:
                responses[str(status)]["links"] = {name: {"operationId": target, "parameters": params}
                                                   for name, target, params in op.links}
        for status in op.statuses():
            responses[str(status)] = {"description": _MEANING[status], **_problem()}
        entry: dict[str, Any] = {"summary": op.summary.split("\n")[0], "operationId": op.handler.__name__,
                                 "tags": [op.tag], "responses": responses}
        if "\n" in op.summary:
            entry["description"] = op.summary.split("\n", 1)[1].strip()
        params = _parameters(op, schemas, defs)
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": op.body_required, **_json_body(schemas[(op.body, "validation")])}
        if op.public:
            entry["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    used = {name: schema for name, schema in sorted(defs.items()) if not _parameters_only(name, operations)}
    used["Problem"] = defs.get("ProblemOut", defs.get("Problem"))
    used.pop("ProblemOut", None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "dispatchsim serve", "version": VERSION,
                 "description": "Dispatch engine API: tenants, providers, dispatch configurations, activities,"
                                " deliveries, results, and Reteno message-event webhooks. Every error is an RFC 9457"
                                " problem document. The schemas are the server's own request models: what this"
                                " document allows is what the server accepts."},
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "components": {"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                                           "Bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": used},
        "paths": paths,
    }


def _parameters_only(name: str, operations: Sequence[Operation]) -> bool:
    """Query and path models become parameters, not schemas of their own."""
    return any(m is not None and m.__name__ == name for op in operations for m in (op.query, op.path_params))
