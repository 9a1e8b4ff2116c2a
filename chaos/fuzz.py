"""A fuzz run of every API route against a real ``dispatchsim serve``.

Requests are drawn from a seeded generator: each route of ``ROUTES`` with its own and foreign
methods, path ids that exist, belong to the other tenant, are missing or are garbage, bodies that
are valid, wrong in type, not JSON, not UTF-8, too large or of the wrong media type, odd query
strings, and every kind of key (none, wrong, admin, tenant, other tenant). Every answer must be
below 500, and every error an RFC 9457 problem document whose ``status`` is the HTTP status.
"""
from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatchsim.server.api import ROUTES

from .harness import (ADMIN_KEY, OTHER_KEY, TENANT_KEY, Receiver, ServeProcess, call, setup_configs, write_config)
from .cycles import CRASH_MARKERS

GARBAGE_IDS = ["", "0", "-1", "999999999", "1e9", "..", "%2F", "%00", "null", "[]", "é", "a" * 300, "'; DROP",
               "00000000-0000-0000-0000-000000000000"]
FIELDS = ["id", "name", "tenant_id", "provider_id", "channel", "endpoint_url", "auth", "retry", "ordering",
          "timeouts", "mapping", "signing_secret", "activity_id", "status", "result", "completedAt", "comment",
          "events", "account_id", "url", "batch_size", "max_wait", "since", "until", "reason", "type",
          "commerceName", "commerceExternalId", "activityDetails"]
QUERY = ["limit", "cursor", "tenant_id", "channel", "status", "dispatch_status", "created_from", "created_to",
         "after", "config_id", "bogus"]


@dataclass
class FuzzReport:
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    not_problems: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.server_errors and not self.not_problems and not self.log_problems

    def lines(self) -> list[str]:
        out = [f"fuzz: {self.requests} requests over {len(ROUTES)} routes in {self.seconds:.1f}s: "
               + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))]
        if self.server_errors:
            out.append(f"  HTTP 5xx ({len(self.server_errors)}): " + "; ".join(self.server_errors[:5]))
        if self.not_problems:
            out.append(f"  errors that are not problem documents ({len(self.not_problems)}): "
                       + "; ".join(self.not_problems[:5]))
        if self.log_problems:
            out.append(f"  log problems ({len(self.log_problems)}): " + "; ".join(self.log_problems[:3]))
        out.append("  " + ("OK" if self.ok else "FAILED"))
        return out


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, 10**400 // 10**399, 3.5, -0.0])
    if kind == 3:
        return rng.choice(["", "x", "SALESMAN", "ordered", "http://127.0.0.1:9/x", "***", "\u0000", "é" * 50,
                           "2024-01-01T00:00:00Z", "not-a-date", "a" * 5000])
    if kind == 4:
        return rng.choice(GARBAGE_IDS)
    if kind == 5:
        return rng.choice(["reten", "reteno", "block", "skip", "none", "COMPLETED"])
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS + ["x", "mode", "base", "type", "value"]): _value(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def _body(rng: random.Random) -> tuple[bytes | None, dict[str, str]]:
    kind = rng.randrange(12)
    if kind == 0:
        return None, {}
    if kind == 1:
        return b"{not json", {}
    if kind == 2:
        return b"\xff\xfe\x00garbage", {}
    if kind == 3:
        return b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}
    if kind == 4:
        return json.dumps({"id": "x" * (1024 * 1024 + 10)}).encode(), {}
    if kind == 5:
        return b"a=1", {"Content-Type": rng.choice(["text/plain", "multipart/form-data; boundary=x",
                                                  "application/x-www-form-urlencoded"])}
    if kind == 6:
        return json.dumps(_value(rng)).encode(), {}
    if kind == 7:
        return b'{"id": 1, "id": 2}', {}
    return json.dumps({rng.choice(FIELDS): _value(rng) for _ in range(rng.randrange(1, 7))}).encode(), {}


def run_fuzz(folder: Path, *, requests: int = 2000, seed: int = 1, max_seconds: float = 600.0) -> FuzzReport:
    folder.mkdir(parents=True, exist_ok=True)
    db, log = folder / "fuzz.db", folder / "fuzz.log"
    for p in folder.glob("fuzz.*"):
        p.unlink()
    cfg = write_config(folder)
    rng = random.Random(seed)
    receiver = Receiver()
    report = FuzzReport()
    started = time.monotonic()
    srv = ServeProcess(db, cfg, log)
    try:
        base = srv.base
        setup_configs(base, receiver)
        status, _, raw = call(base, "POST", "/api/dispatch-configurations", {
            "id": "secret-cfg", "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.base + "/o"},
            key=OTHER_KEY)
        pools = _pools(base)
        keys = [None, "wrong-key-000000000000", ADMIN_KEY, TENANT_KEY, TENANT_KEY, OTHER_KEY]
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        for n in range(requests):
            if time.monotonic() - started > max_seconds:
                break
            op = rng.choice(ROUTES)
            method, template = op.method, op.path
            if rng.random() < 0.25:
                method = rng.choice(methods)
            path = template
            for name, pool in pools.items():
                if "{" + name + "}" in path:
                    path = path.replace("{" + name + "}", _quote(rng.choice(pool)))
            if rng.random() < 0.4:
                path += "?" + "&".join(f"{rng.choice(QUERY)}={_quote(str(_value(rng)))}"
                                       for _ in range(rng.randrange(1, 4)))
            raw_body, headers = _body(rng) if method in ("POST", "PUT", "PATCH") or rng.random() < 0.1 else (None, {})
            key = rng.choice(keys)
            try:
                code, resp_headers, payload = call(base, method, path, key=key, raw=raw_body, headers=headers,
                                                   timeout=30)
            except OSError as exc:
                report.server_errors.append(f"{method} {path[:80]}: connection failed: {exc}")
                break
            report.requests += 1
            report.statuses[code] += 1
            where = f"{method} {path[:80]} -> {code}"
            if code >= 500:
                report.server_errors.append(f"{where}: {payload[:200]!r}")
            elif code >= 400:
                ctype = resp_headers.get("Content-Type", "")
                try:
                    doc = json.loads(payload)
                except ValueError:
                    doc = None
                if not ctype.startswith("application/problem+json") or not isinstance(doc, dict) \
                        or doc.get("status") != code or not doc.get("detail"):
                    report.not_problems.append(f"{where}: {ctype} {payload[:120]!r}")
    finally:
        srv.signal(signal.SIGTERM)
        code, _ = srv.wait()
        if code != 0:
            report.server_errors.append(f"serve exited {code} after the fuzz run")
        receiver.close()
        report.seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    report.log_problems = [ln[:300] for ln in text.splitlines() if any(m in ln for m in CRASH_MARKERS)]
    return report


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _pools(base: str) -> dict[str, list[str]]:
    """Ids for path parameters: own, the other tenant's, missing, garbage."""
    mine = [json.loads(call(base, "POST", "/api/activities", {"channel": "SALESMAN"})[2])["id"] for _ in range(3)]
    theirs = [json.loads(call(base, "POST", "/api/activities", {"channel": "SALESMAN"}, key=OTHER_KEY)[2])["id"]]
    deliveries = []
    for aid, key in ((mine[0], TENANT_KEY), (theirs[0], OTHER_KEY)):
        items = json.loads(call(base, "GET", f"/api/activities/{aid}/deliveries", key=key)[2])["items"]
        deliveries += [str(d["id"]) for d in items]
    return {
        "tenant_id": ["acme", "other", "ghost", *GARBAGE_IDS],
        "account_id": ["acme", "other", "ghost", *GARBAGE_IDS],
        "config_id": ["ordered", "unordered", "secret-cfg", "missing", *GARBAGE_IDS],
        "activity_id": [*mine, *theirs, "6f1c0d4e-0000-4000-8000-000000000000", *GARBAGE_IDS],
        "delivery_id": [*deliveries, *GARBAGE_IDS],
    }
