"""What a finished run keeps, kept small: the event log in a temporary file (what goes in comes back
the same, in order), deliveries and attempts as compact rows that read like the API's dicts."""
from __future__ import annotations

import json

import pytest

from dispatchsim.scenarios import eventlog
from dispatchsim.scenarios.eventlog import EventLog
from dispatchsim.scenarios.rows import RowKind


def test_lines_come_back_in_order_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "_CHUNK", 7)  # lines cross chunk edges, one is longer than a chunk
    lines = [json.dumps({"event": "delivery.created", "n": i, "text": "é" * (i % 5)}, ensure_ascii=False)
             for i in range(50)]
    log = EventLog()
    for line in lines[:20]:
        log.append(line)
    assert list(log) == lines[:20]  # read while the run still writes ...
    for line in lines[20:]:
        log.append(line)
    assert list(log) == lines and len(log) == 50  # ... and the writing goes on where it was
    assert log.head(3) == lines[:3] and log.tail(3) == lines[-3:] and log.tail(0) == []
    assert log.jsonl() == "".join(line + "\n" for line in lines)
    log.write_to(tmp_path / "events.jsonl")
    assert (tmp_path / "events.jsonl").read_text(encoding="utf-8") == log.jsonl()
    log.close()
    assert len(log) == 0
    with pytest.raises(ValueError):
        log.append("{}")


def test_an_empty_log():
    log = EventLog()
    assert list(log) == [] and log.jsonl() == "" and log.head(5) == [] and len(log) == 0


def test_rows_read_like_the_dicts_they_were_made_from():
    kind = RowKind()
    first = {"id": 1, "status": "DISPATCHED", "dispatched_at": "2026-04-10T14:30:00.000Z", "failed_reason": None}
    second = {**first, "id": 2, "status": "FAILED", "failed_reason": "exhausted"}
    a, b = kind(first), kind(second)
    assert a == first and b == second and a != b
    assert (a["status"], b.get("failed_reason"), a.get("nope", "-")) == ("DISPATCHED", "exhausted", "-")
    assert list(b) == list(second) and len(b) == 4 and dict(b) == second
    assert a._index is b._index  # one key index for every row of a kind
    with pytest.raises(KeyError):
        a["nope"]
    other = kind({"id": 3, "outcome": "SUCCESS"})  # other keys: a new index, the old rows keep theirs
    assert other == {"id": 3, "outcome": "SUCCESS"} and a == first
