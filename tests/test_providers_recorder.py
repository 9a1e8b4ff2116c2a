"""The recorder's checks, determinism of the record, and the ``provider`` CLI."""
from __future__ import annotations

import argparse
import asyncio
import io
import json

import aiohttp
import pytest

from dispatchsim.providers import EndpointSet, Recorder, load_config, parse_config
from dispatchsim.providers.cli import assign_ports, register_cli, serve


def client(total: float = 10.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total, ceil_threshold=10**9))


def fake(rec: Recorder, payload, status=200, *, at=0.0, endpoint="a", webhook_id=None, method="POST",
         fault=None, gone=False):
    """Add a closed record by hand (the checks only read closed facts)."""
    headers = {"webhook-id": webhook_id} if webhook_id else {}
    r = rec.open(endpoint=endpoint, at=at, offset=at, method=method, path="/hooks", query="", headers=headers,
                 body=json.dumps(payload), json=payload)
    r.response_status, r.fault, r.client_disconnected = status, fault, gone
    rec.close(r, at)
    return r


# ------------------------------------------------------------------ checks


async def test_duplicates_count_received_and_acknowledged():
    rec = Recorder()
    fake(rec, {"id": "a"}, 503, webhook_id="msg_a")
    fake(rec, {"id": "a"}, 200, webhook_id="msg_a")
    fake(rec, {"id": "a"}, 200, webhook_id="msg_a")
    fake(rec, {"id": "b"}, None, fault="hang", gone=True)
    fake(rec, {"id": "b"}, 200)
    fake(rec, {"id": "c"}, 200)
    fake(rec, {"id": "c"}, 200, method="GET")  # a verification GET is not a delivery
    dups = rec.duplicates()
    assert {k: (v.received, v.acknowledged, v.seqs) for k, v in dups.items()} == {
        "msg_a": (3, 2, [1, 2, 3]), "b": (2, 1, [4, 5])}
    assert rec.deliveries()["c"].received == 1


async def test_order_and_check_order():
    rec = Recorder()
    for key, status in [("1", 503), ("1", 200), ("3", 200), ("2", 200), ("4", 200)]:
        fake(rec, {"id": key}, status)
    assert rec.order("a") == ["1", "3", "2", "4"]
    assert rec.order("a", acknowledged=False) == ["1", "3", "2", "4"]
    report = rec.check_order("a", ["1", "2", "3", "4"])
    assert not report.ok
    v = report.first_violation
    assert (v.position, v.expected, v.actual) == (1, "2", "3")
    assert str(v) == "position 1: expected '2', got '3'"
    assert rec.check_order("a", ["1", "3", "2", "4"]).ok


async def test_check_order_per_partition_and_missing():
    rec = Recorder()
    rows = [("1", "C1"), ("3", "C2"), ("2", "C1"), ("5", "C2"), ("4", "C1")]
    for key, shop in rows:
        fake(rec, {"id": key, "commerceExternalId": shop})
    expected = ["1", "2", "3", "4", "5", "6"]
    assert not rec.check_order("a", expected).ok
    report = rec.check_order("a", expected, partition_key="commerceExternalId")
    assert report.ok and report.first_violation is None
    assert report.actual == {"C1": ["1", "2", "4"], "C2": ["3", "5"]}
    assert report.missing == ["6"] and report.unexpected == []
    assert rec.partitions("a", "commerceExternalId") == {"C1": ["1", "2", "4"], "C2": ["3", "5"]}
    fake(rec, {"id": "7", "commerceExternalId": "C2"})
    fake(rec, {"id": "6", "commerceExternalId": "C2"})
    bad = rec.check_order("a", expected + ["7"], partition_key="commerceExternalId")
    assert not bad.ok and bad.first_violation.partition == "C2"
    assert (bad.first_violation.expected, bad.first_violation.actual) == ("6", "7")


async def test_strict_order_flags_attempts_that_overtake_a_retrying_head():
    rec = Recorder()
    fake(rec, {"id": "1"}, 503)
    fake(rec, {"id": "2"}, 503)  # sent while 1 was still retrying: not "postponed"
    fake(rec, {"id": "1"}, 200)
    fake(rec, {"id": "2"}, 200)
    assert rec.check_order("a", ["1", "2"]).ok
    strict = rec.check_order("a", ["1", "2"], strict=True)
    assert not strict.ok and (strict.first_violation.expected, strict.first_violation.actual) == ("1", "2")

    ok = Recorder()
    fake(ok, {"id": "1"}, 503)
    fake(ok, {"id": "1"}, 500)  # 1 ends FAILED and is skipped: it never blocks 2
    fake(ok, {"id": "2"}, 200)
    fake(ok, {"id": "3"}, 503)
    fake(ok, {"id": "3"}, 200)
    assert ok.check_order("a", ["1", "2", "3"], strict=True).ok


async def test_gaps():
    rec = Recorder()
    for key in ["1", "2", "4", "7"]:
        fake(rec, {"id": key})
    fake(rec, {"id": "5"}, 500)
    assert rec.gaps("a") == ["3", "5", "6"]
    assert rec.gaps("a", ["1", "2", "3", "4", "7", "8"]) == ["3", "8"]


async def test_batches_carry_several_keys():
    rec = Recorder()
    fake(rec, [{"id": "e1"}, {"id": "e2"}])
    fake(rec, [{"id": "e3"}])
    assert rec.order("a") == ["e1", "e2", "e3"]


async def test_retry_intervals_and_jsonl_round_trip(tmp_path):
    rec = Recorder()
    for at in (0, 60, 180, 420, 900):
        fake(rec, {"id": "d1"}, 503, at=at, webhook_id="msg_1")
    fake(rec, {"id": "d2"}, 200, at=1000)
    assert rec.retry_intervals("msg_1") == [60, 120, 240, 480]
    assert rec.retry_intervals("d2") == []
    path = tmp_path / "rec.jsonl"
    rec.to_jsonl(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["headers"] == {"webhook-id": "msg_1"}
    again = Recorder.from_jsonl(path)
    assert again.jsonl() == rec.jsonl() and again.retry_intervals("msg_1") == [60, 120, 240, 480]
    buf = io.StringIO()
    rec.to_jsonl(buf)
    assert buf.getvalue() == rec.jsonl()


async def test_a_record_file_with_any_seq_numbers_reads_back(tmp_path):
    """A filtered or hand-edited record file keeps its records' own numbers: they are read in file order."""
    rec = Recorder()
    for at in (0, 60, 180):
        fake(rec, {"id": "d1"}, 503, at=at, webhook_id="msg_1")
    kept = [json.loads(line) for line in rec.jsonl().splitlines()][1:]  # seq 2 and 3
    path = tmp_path / "filtered.jsonl"
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in reversed(kept)))
    again = Recorder.from_jsonl(path)
    assert [r.seq for r in again.records] == [3, 2] and [r.at for r in again.records] == [180, 60]


async def test_recorder_over_http_sees_retries_of_a_sender():
    """A sender retrying with 1m, 2m, 4m backoff, as the engine would, against a fail-3-times endpoint."""
    cfg = parse_config({"endpoints": {"p": {"behaviour": {"sequence": [{"times": 3, "status": 503}, 200]}}}})
    async with EndpointSet(cfg) as es, client() as s:
        for delay in (0, 60, 120, 240):
            await asyncio.sleep(delay)
            async with s.post(es.url("p"), json={"id": "act-1"}, headers={"webhook-id": "msg_1"}) as r:
                status = r.status
        assert status == 200
    assert es.recorder.retry_intervals("msg_1") == [60, 120, 240]
    assert {k: (v.received, v.acknowledged) for k, v in es.recorder.duplicates("p").items()} == {"msg_1": (4, 1)}


# ------------------------------------------------------------------ determinism

MIXED = {
    "endpoints": {
        "a": {"behaviour": {"mix": [{"p": 0.2, "status": 503, "retry_after": 30}, {"p": 0.1, "fault": "garbage"},
                                    {"p": 0.1, "fault": "hang"}, {"p": 0.1, "fault": "reset"},
                                    {"status": 200, "latency": {"lognormal": {"median": "200ms", "sigma": 1}}}]}},
        "b": {"behaviour": {"windows": [{"from": "1m", "to": "3m", "fault": "refuse"}],
                            "else": {"mix": [{"p": 0.5, "status": 500}, {"status": 201,
                                                                         "latency": {"uniform": ["0s", "2s"]}}]}}},
    }
}


async def run_once(seed: int, ports: dict[str, int] | None = None) -> tuple[str, dict[str, int]]:
    loop = asyncio.get_running_loop()
    base = loop.time()
    async with EndpointSet(parse_config(MIXED), seed=seed, ports=ports, now=lambda: loop.time() - base) as es:
        async with client(total=5) as s:
            async def send(name: str, i: int) -> None:
                try:
                    async with s.post(es.url(name), json={"id": f"{name}-{i}"}) as r:
                        await r.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
            for i in range(40):
                await send("a", i)
                await send("b", i)
                await asyncio.sleep(7)
        await es.settle()
        return es.recorder.jsonl(), es.ports


async def test_same_seed_gives_an_identical_record():
    first, ports = await run_once(seed=42)
    second, _ = await run_once(seed=42, ports=ports)
    assert first == second
    rows = [json.loads(line) for line in first.splitlines()]
    faults = {r["fault"] for r in rows}
    assert {"garbage", "hang", "reset"} <= faults
    assert not any(r["endpoint"] == "b" and 60 <= r["offset"] < 180 for r in rows)
    third, _ = await run_once(seed=43, ports=ports)
    assert third != first


# ------------------------------------------------------------------ CLI


async def test_register_cli_adds_the_provider_subcommand(tmp_path):
    parser = argparse.ArgumentParser(prog="dispatchsim")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["provider", "--config", "p.yaml", "--port", "9100"])
    assert (args.config, args.port, args.record, args.seed) == ("p.yaml", 9100, "provider-record.jsonl", 0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints:\n  a:\n    behaviour: {status: 42}\n")
    args = parser.parse_args(["provider", "--config", str(bad)])
    assert args.func(args) == 2


async def test_assign_ports_skips_explicit_ones():
    cfg = parse_config({"endpoints": {"a": {}, "b": {"port": 9101}, "c": {}}})
    assert assign_ports(cfg, 9100) == {"a": 9100, "c": 9102}
    assert assign_ports(cfg, None) == {}


async def test_serve_logs_a_line_per_request_and_writes_the_record(tmp_path):
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text("endpoints:\n  acme:\n    behaviour: {sequence: [{status: 503}, {status: 200}]}\n"
                        "  down:\n    behaviour: close\n")
    out, stop = io.StringIO(), asyncio.Event()
    record = tmp_path / "rec.jsonl"
    task = asyncio.create_task(serve(load_config(cfg_path), out=out, stop=stop, record=str(record)))
    while "Ctrl-C" not in out.getvalue():
        await asyncio.sleep(0.01)
    urls = dict(line.split(": ", 1) for line in out.getvalue().splitlines()[:2])
    async with client() as s:
        for _ in range(2):
            async with s.post(urls["acme"], json={"id": "act-1"}) as r:
                await r.read()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with s.post(urls["down"], json={"id": "act-2"}):
                pass
    stop.set()
    assert await task == 0
    log = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in log[3:6]] == [
        "acme POST /hooks -> 503 id=act-1", "acme POST /hooks -> 200 id=act-1", "down POST /hooks -> close id=act-2"]
    assert log[-1] == f"wrote 3 records to {record}"
    assert [json.loads(line)["response_status"] for line in record.read_text().splitlines()] == [503, 200, None]


def test_a_record_path_that_cannot_be_written_is_refused_before_serving(tmp_path, capsys):
    """The record is written only when the provider stops: a missing folder or a directory was found then,
    and reported as 'cannot listen'; everything received was lost."""
    from dispatchsim.providers.cli import run_cli

    cfg = tmp_path / "p.yaml"
    cfg.write_text("endpoints:\n  acme:\n    behaviour: {status: 200}\n")
    (tmp_path / "file").write_text("")
    for bad, why in ((tmp_path, "is a directory"), (tmp_path / "file" / "rec.jsonl", "cannot create its folder")):
        ns = argparse.Namespace(config=str(cfg), record=str(bad), port=None, host="127.0.0.1", seed=0)
        assert run_cli(ns) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --record {bad}: {why}") and err.count("\n") == 1, err


async def test_a_record_that_cannot_be_written_at_the_end_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("endpoints:\n  acme:\n    behaviour: {status: 200}\n")
    stop = asyncio.Event()
    stop.set()
    record = tmp_path / "removed" / "rec.jsonl"  # the folder went away while it served
    assert await serve(load_config(cfg), out=io.StringIO(), stop=stop, record=str(record)) == 2
    assert capsys.readouterr().err == f"error: --record {record}: cannot write (No such file or directory)\n"


def test_closed_records_wait_in_a_file_and_read_back_equal():
    """A long run's records are most of the recorder's memory: once closed they go to a temporary file
    and come back equal for every reader (indexing, iterating, asdict, the record file); open ones
    stay the objects their endpoint is filling in."""
    from dataclasses import asdict

    rec = Recorder()
    long_body = json.dumps({"id": "a-1", "note": "é😀" * 40, "n": list(range(30))}, ensure_ascii=False)
    made = [rec.open(endpoint="a", at=float(i), offset=float(i), method="POST", path="/h", query="",
                     headers={"content-type": "application/json", "webhook-id": f"w{i}"},
                     body=long_body if i % 2 else "\udcff lone surrogate") for i in range(6)]
    for r in made[:4]:
        r.response_status = 200
        rec.close(r, r.at + 0.25)
    closed, still_open = rec.records[1], rec.records[4]
    assert still_open is made[4] and closed is not made[1]
    assert closed == made[1] and closed.body == long_body and closed.json["id"] == "a-1" and closed.acknowledged
    assert rec.records[0].body == "\udcff lone surrogate" and rec.records[-1] is made[5]
    assert list(rec.records) == made and rec.records == made and rec.records[1:3] == made[1:3]
    assert asdict(rec.records[3]) == asdict(made[3]) and len(rec.records) == 6
    with pytest.raises(IndexError):
        rec.records[6]
    rec.map_headers(lambda v: v.replace("w", "hook-"))  # closed ones change as they are read, open ones now
    assert [r.headers["webhook-id"] for r in rec.records] == [f"hook-{i}" for i in range(6)]
    rec.close(made[4], 9.0)
    assert rec.records[4].headers["webhook-id"] == "hook-4"  # mapped once, not again when stored
    assert [json.loads(line)["seq"] for line in rec.jsonl().splitlines()] == [1, 2, 3, 4, 5, 6]

def test_receipts_read_from_the_file_equal_those_of_the_records():
    """``Records.receipts`` reads the fields the expectations count without making each record: equal,
    record by record, to ``receipt(record)``; header changes asked for later apply (to the key too); a
    record without a webhook-id (or with an empty one) takes its key from the body; open ones too."""
    from dispatchsim.providers.recorder import receipt

    rec = Recorder()
    heads = [{"webhook-id": "w1"}, {"webhook-id": ""}, {}, {"webhook-id": "w4", "host": "127.0.0.1:9"}, {"webhook-id": "w5"}]
    bodies = ['{"id": "x"}', '{"id": "body-2"}', '{"id": 3}', "not json", ""]
    made = [rec.open(endpoint=f"e{i % 2}", at=float(i), offset=float(i), method="GET" if i == 3 else "POST",
                     path="/h", query="", headers=h, body=b) for i, (h, b) in enumerate(zip(heads, bodies))]
    for i, r in enumerate(made[:4]):
        r.response_status = (200, 503, 204, 200)[i]
        r.fault = "reset" if i == 3 else None
        rec.close(r, r.at + 0.5)
    assert list(rec.records.receipts()) == [receipt(r) for r in rec.records] == [
        ("e0", "POST", True, "w1", True), ("e1", "POST", False, "body-2", False), ("e0", "POST", True, "3", False),
        ("e1", "GET", False, "w4", True), ("e0", "POST", False, "w5", True)]
    rec.map_headers(lambda v: "" if v == "w1" else v.replace("w", "hook-"))
    assert list(rec.records.receipts()) == [receipt(r) for r in rec.records]
    assert [k for _, _, _, k, _ in rec.records.receipts()] == ["x", "body-2", "3", "hook-4", "hook-5"]


def test_a_recorder_that_keeps_receipts_only_gives_the_receipts_of_one_that_keeps_records():
    """``Recorder(keep=False)``: a closed record is stored as its receipt; the receipts (and the number
    of records) are those a recorder keeping every record gives, header changes asked for later
    included; a closed record cannot be read back (``RecordsNotKept``), an open one can, and the
    listeners get every record whole as it closes."""
    from dispatchsim.providers import RecordsNotKept

    full, light = Recorder(), Recorder(keep=False)
    heard: list[str] = []
    light.subscribe(lambda record: heard.append(record.body))
    heads = [{"webhook-id": "w1"}, {"webhook-id": ""}, {}, {"webhook-id": "w4", "host": "127.0.0.1:9"}, {"webhook-id": "w5"}]
    bodies = ['{"id": "x"}', '{"id": "body-2"}', '{"id": 3}', "not json", ""]
    for rec in (full, light):
        made = [rec.open(endpoint=f"e{i % 2}", at=float(i), offset=float(i), method="GET" if i == 3 else "POST",
                         path="/h", query="", headers=dict(h), body=b) for i, (h, b) in enumerate(zip(heads, bodies))]
        for i, r in enumerate(made[:4]):
            r.response_status = (200, 503, 204, 200)[i]
            r.fault = "reset" if i == 3 else None
            rec.close(r, r.at + 0.5)
        rec.map_headers(lambda v: v.replace("w", "hook-"))
        rec.close(made[4], 9.0)
    assert list(light.records.receipts()) == list(full.records.receipts()) and len(light.records) == 5
    assert [k for _, _, _, k, _ in light.records.receipts()] == ["hook-1", "body-2", "3", "hook-4", "hook-5"]
    assert heard == bodies
    with pytest.raises(RecordsNotKept, match="keep_records=True, or with --record"):
        light.records[0]
    with pytest.raises(RecordsNotKept):
        list(light.records)
    assert full.records[0].body == '{"id": "x"}'


def test_a_port_in_use_keeps_the_record_file_and_says_which_address(tmp_path, capsys):
    """The endpoints never listened, yet the record file was written with 0 records (an earlier record
    there was lost) and the error did not say which address was taken."""
    import socket

    from dispatchsim.providers.cli import run_cli

    cfg = tmp_path / "p.yaml"
    cfg.write_text("endpoints:\n  acme:\n    behaviour: {status: 200}\n")
    record = tmp_path / "rec.jsonl"
    record.write_text('{"kept": true}\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ns = argparse.Namespace(config=str(cfg), record=str(record), port=port, host="127.0.0.1", seed=0)
        assert run_cli(ns) == 1
    out, err = capsys.readouterr()
    assert err == f"error: cannot listen: Address already in use (127.0.0.1:{port}, endpoint acme)\n"
    assert "wrote" not in out
    assert record.read_text() == '{"kept": true}\n'
