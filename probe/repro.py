"""One shell line that re-sends an exchange with ``curl``: what a team pastes to reproduce a failure.

Credentials and the signing secret stay in environment variables (``$PROBE_API_KEY``,
``$PROBE_TOKEN``, ``$PROBE_USER``/``$PROBE_PASSWORD``, ``$PROBE_SECRET``); the line never holds them.
A genuine signature is recomputed in the shell over a fresh timestamp (keeping the probe's offset,
so a stale-timestamp request stays stale); a deliberately wrong one is repeated as sent.
"""
from __future__ import annotations

import shlex

from dispatchsim.engine.config import Auth
from dispatchsim.engine.signing import SECRET_PREFIX, sign, signing_key

#: Bodies up to this size are written into the line; larger ones are read from the JSON report.
INLINE_BODY = 4096
#: Replaced with the path of the ``--json`` report when a report is rendered.
REPORT_PLACEHOLDER = "{report}"

ENV = {"api_key": "PROBE_API_KEY", "bearer": "PROBE_TOKEN", "password": "PROBE_PASSWORD", "user": "PROBE_USER",
       "secret": "PROBE_SECRET"}


def curl_line(*, method: str, url: str, headers: dict[str, str], body: bytes, auth: Auth, secret: str | None,
              now: int, check: str, index: int) -> str:
    """The exchange as ``VAR=…; curl …``; ``check``/``index`` locate a large body in the report."""
    setup: list[str] = []
    args = ["curl", "-sS", "-i", "-X", method, shlex.quote(url)]
    lower = {k.lower(): (k, v) for k, v in headers.items()}
    wid = lower.get("webhook-id", ("", ""))[1]
    ts_raw = lower.get("webhook-timestamp", ("", ""))[1]
    genuine = bool(secret and ts_raw.isdigit() and
                   lower.get("webhook-signature", ("", ""))[1] == sign(secret, wid, int(ts_raw), body))
    if body:
        if len(body) <= INLINE_BODY:
            setup.append(f"BODY={shlex.quote(body.decode('utf-8', 'replace'))}")
        else:
            setup.append(f"BODY=\"$(jq -j '.checks[] | select(.id == \"{check}\") | .evidence[{index}].request_body' "
                         f"{REPORT_PLACEHOLDER})\"")
    if ts_raw.isdigit():
        offset = int(ts_raw) - now
        setup.append("TS=$(date +%s)" if abs(offset) < 60 else f"TS=$(( $(date +%s) {'-' if offset < 0 else '+'} "
                                                                  f"{abs(offset)} ))")
    if genuine and secret is not None:
        key = ('-macopt hexkey:"$(printf %s "${PROBE_SECRET#whsec_}" | base64 -d | od -An -vtx1 | tr -d \' \\n\')"'
               if secret.startswith(SECRET_PREFIX) and signing_key(secret) != secret.encode() else
               '-macopt key:"$PROBE_SECRET"')
        setup.append(f"SIG=\"v1,$(printf '%s.%s.%s' {shlex.quote(wid)} \"$TS\" \"$BODY\" | openssl dgst -sha256 "
                     f"-mac HMAC {key} -binary | base64 | tr -d '\\n')\"")
    auth_values = {v for v in auth.headers().values()}
    for name, value in headers.items():
        low = name.lower()
        if low == "webhook-timestamp" and ts_raw.isdigit():
            args += ["-H", f'"{name}: $TS"']
        elif low == "webhook-signature" and genuine:
            args += ["-H", f'"{name}: $SIG"']
        elif value in auth_values:
            args += ["-H", f'"{name}: {_auth_expression(auth)}"']
        else:
            args += ["-H", shlex.quote(f"{name}: {value}")]
    if body:
        args += ["--data-binary", '"$BODY"']
    return "; ".join([*setup, " ".join(args)])


def _auth_expression(auth: Auth) -> str:
    if auth.type == "api_key":
        return f"${ENV['api_key']}"
    if auth.type == "bearer":
        return f"Bearer ${ENV['bearer']}"
    return f"Basic $(printf %s \"${ENV['user']}:${ENV['password']}\" | base64 | tr -d '\\n')"


def environment(auth: Auth, secret: str | None) -> list[str]:
    """The environment variables a reproduction line reads, for the report's footer."""
    names = {"api_key": [ENV["api_key"]], "bearer": [ENV["bearer"]], "basic": [ENV["user"], ENV["password"]]}
    return [*names.get(auth.type, []), *([ENV["secret"]] if secret else [])]
