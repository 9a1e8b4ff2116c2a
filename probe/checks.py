"""The catalogue of checks: what each sends, and what a correct receiver does about it.

The runner implements them (``probe/runner.py``); this table is what reports, ``--only``/``--skip``
and the docs read, so a check's promise to the team is written once.
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import ProbeError


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """What a probe check asserts and what a correct receiver does, shown with its result."""

    title: str  #: one line: what the check asserts
    correct: str  #: what a correct receiver does (printed under every failure)
    delivers: bool = True  #: sends deliveries that must be processed (verified when a channel is given)

    def __str__(self) -> str:
        return self.title


#: Check ids in the order they run.
CHECKS: dict[str, CheckSpec] = {
    "verify_get": CheckSpec(
        "verification GET answered 2xx",
        "answers the verification GET (no body, same credentials) with 2xx, so activation succeeds",
        delivers=False),
    "seed_post": CheckSpec(
        "seed-shape activity acknowledged (2xx) within the timeout and processed once",
        "answers 2xx within the sender's timeout, then processes the delivery exactly once; slow work "
        "goes to a queue after the acknowledgement"),
    "auth_missing": CheckSpec(
        "request without credentials rejected (401/403)",
        "answers 401 (or 403) when the credential header is missing, and processes nothing"),
    "auth_wrong": CheckSpec(
        "request with wrong credentials rejected (401/403)",
        "compares the credential's value (in constant time), answers 401/403 when it is wrong, and "
        "processes nothing"),
    "signature_missing": CheckSpec(
        "request without webhook-signature rejected",
        "requires webhook-signature on every request once a secret is configured: answers 401 "
        "without it, and processes nothing"),
    "signature_tampered": CheckSpec(
        "tampered webhook-signature rejected",
        "recomputes HMAC-SHA256 over id.timestamp.body, compares in constant time, answers 401 on a "
        "mismatch, and processes nothing"),
    "signature_stale": CheckSpec(
        "stale webhook-timestamp rejected",
        "rejects a webhook-timestamp outside a tolerance (typically 5 minutes) with 401, even when "
        "the signature is correct: it stops replays"),
    "header_case": CheckSpec(
        "header names in another letter case accepted",
        "reads headers case-insensitively (RFC 9110 §5.1): Webhook-Id, WEBHOOK-ID and webhook-id "
        "are one header; proxies and HTTP/2 change the case"),
    "malformed_json": CheckSpec(
        "a body that is not JSON rejected with 4xx",
        "answers 400 (or 415/422) to a body it cannot parse; a 2xx tells the sender the data was "
        "taken while it was lost", delivers=False),
    "duplicate": CheckSpec(
        "re-sent delivery acknowledged and processed once",
        "acknowledges a re-sent delivery (same webhook-id) with 2xx and processes it only once: keep "
        "the webhook-id (or the payload id) of processed deliveries and skip repeats"),
    "duplicate_overlap": CheckSpec(
        "delivery re-sent while the first copy is in progress: processed once",
        "de-duplicates atomically (a unique key or an insert-if-absent), so a retry that overlaps the "
        "first copy is not processed a second time"),
    "burst_ordered": CheckSpec(
        "ordered burst (one queue, in sequence) acknowledged and processed in order",
        "processes the deliveries of one queue (one commerceExternalId) in the order they were "
        "acknowledged, and never lets an older one overwrite a newer state"),
    "burst_concurrent": CheckSpec(
        "concurrent burst acknowledged and every delivery processed",
        "acknowledges concurrent deliveries within the timeout (work queued, not done in the request) "
        "and processes every one of them: no lost updates under concurrency"),
    "edge_unicode": CheckSpec(
        "unicode names accepted and processed",
        "decodes the body as UTF-8 and stores any Unicode text (emoji, CJK, Arabic, combining marks)"),
    "edge_nulls": CheckSpec(
        "nulls in optional fields accepted and processed",
        "accepts null in every optional field"),
    "edge_unknown_fields": CheckSpec(
        "unknown extra fields tolerated",
        "ignores fields it does not know (the sender adds fields without notice)"),
    "edge_max_size": CheckSpec(
        "max-size payload accepted and processed",
        "accepts bodies up to the maximum size quickly (no body limit below it, no work proportional "
        "to the size inside the request)"),
    "slow_body": CheckSpec(
        "body sent slowly: acknowledged, endpoint still up",
        "accepts a body that arrives slowly (within the timeout) and keeps serving other requests"),
    "connection_reuse": CheckSpec(
        "requests on one kept-alive connection acknowledged",
        "serves several requests on one kept-alive connection"),
    "connection_new": CheckSpec(
        "a new connection per request acknowledged",
        "serves a new connection per request"),
    "abort_mid_body": CheckSpec(
        "request aborted mid-body: endpoint still up",
        "survives a client that disconnects half-way through a body, and processes nothing from it",
        delivers=False),
}


def select(only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[str]:
    """The check ids to run, in catalogue order; unknown ids are refused with the known ones."""
    unknown = sorted({*only, *skip} - set(CHECKS))
    if unknown:
        raise ProbeError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    return [c for c in CHECKS if (not only or c in only) and c not in skip]
