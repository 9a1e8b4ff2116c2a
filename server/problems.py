"""RFC 9457 problem documents: every error answer of the API, and how a refused field is named.

A refusal that concerns fields lists each in ``errors`` (``[{"field": "activityDetails.type",
"message": "must be a string or null, got integer"}]``, fields dotted within the body, or the query
or path parameter's name) and repeats the first in ``field``; ``detail`` says all of it in one line.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from dispatchsim.engine import DispatchsimError

PROBLEM_BASE = "https://dispatchsim.dev/problems/"
PROBLEM_TYPE = "application/problem+json"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
          500: "Internal Server Error", 503: "Service Unavailable"}


class Problem(DispatchsimError):
    """An error answer: status, a short slug for ``type``, and the detail shown to the caller."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.extra = status, slug, detail, extra


def field_problem(status: int, where: str, errors: Iterable[tuple[str | None, str]], *,
                  slug: str = "invalid") -> Problem:
    """One problem for every refused field at once: ``detail`` ``invalid body: f: m; g: n``."""
    items = [(f, m) for f, m in errors]
    detail = f"invalid {where}: " + "; ".join(f"{f}: {m}" if f else m for f, m in items)
    listed = [{"field": f, "message": m} for f, m in items if f]
    extra: dict[str, Any] = {"field": listed[0]["field"], "errors": listed} if listed else {}
    return Problem(status, slug, detail, **extra)


def problem_response(request: web.Request, p: Problem, *, headers: dict[str, str] | None = None) -> web.Response:
    doc = {"type": PROBLEM_BASE + p.slug, "title": TITLES.get(p.status, "Error"), "status": p.status,
           "detail": p.detail, "instance": request.path, **p.extra}
    if p.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'ApiKey header="X-Api-Key"'}
    return web.json_response(doc, status=p.status, content_type=PROBLEM_TYPE, headers=headers)
