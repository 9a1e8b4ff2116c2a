"""The run's event log lives in a temporary file: what goes in comes back the same, in order."""
from __future__ import annotations

import json

import pytest

from dispatchsim.scenarios import eventlog
from dispatchsim.scenarios.eventlog import EventLog


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
