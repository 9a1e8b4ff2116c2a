"""What the endpoints received and what they answered — the evidence scenarios and tests check.

A record is opened when a request's body has been read and closed when the endpoint is done
with it (answered, injected its fault, or saw the client go away). The checks read only
closed facts: arrival order (``seq``), clock time, the key of the delivery and whether the
endpoint acknowledged it (a 2xx fully written before the client left).
"""
from __future__ import annotations

import json
import marshal
import operator
import os
import tempfile
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any, overload

from .checks import _MISSING, lookup
from .errors import RecordsNotKept

#: distinct header names and values a recorder shares between its records (see ``Recorder._shared``)
_SHARED_MAX = 4096


@dataclass(slots=True)
class Record:
    """One HTTP request an endpoint received, and what it answered.

    Once closed, a record waits in its recorder's file (see :class:`Records`): reading it back
    gives an equal record, not the same object.
    """

    seq: int  #: arrival order over the whole endpoint set, from 1
    endpoint: str
    at: float  #: clock time the request arrived
    offset: float  #: seconds since the endpoint set's t0
    method: str
    path: str
    query: str
    headers: dict[str, str]  #: lower-cased names, secrets redacted
    body: str
    response_status: int | None = None  #: status line actually sent; None when none was
    fault: str | None = None  #: injected fault, e.g. "hang", "reset"
    latency: float = 0.0  #: delay the endpoint added before answering
    note: str | None = None  #: why: "auth: wrong X-Api-Key", "schema: missing id", "no such path" …
    client_disconnected: bool = False  #: the client went away before the endpoint finished
    duration: float | None = None  #: clock seconds from arrival to the end of the exchange

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None. Parsed on each use rather than kept: a long simulation
        records tens of thousands of bodies, and the parsed trees would be most of its memory."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def acknowledged(self) -> bool:
        """The sender saw a 2xx: the response was complete before the client left."""
        return _acknowledged(self.response_status, self.fault, self.client_disconnected)

    @property
    def delivery_key(self) -> str | None:
        """``webhook-id`` header, else the payload's ``id``."""
        if self.headers.get("webhook-id"):
            return self.headers["webhook-id"]
        data = self.json
        if isinstance(data, dict) and data.get("id") is not None:
            return str(data["id"])
        return None

    def outcome(self) -> str:
        """One word or code for logs: ``200``, ``503``, ``hang``, ``reset`` …"""
        text = self.fault or (str(self.response_status) if self.response_status is not None else "no response")
        if self.client_disconnected:
            text += " (client gone)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data for the record file (the decoded body included as ``json``)."""
        out = asdict(self)
        out["json"] = self.json
        return out


#: a record's fields in order: how it is written to and read from its recorder's file
_FIELDS = tuple(f.name for f in fields(Record))
#: where a receipt's fields are in a stored record's values (see Records.receipts)
_ENDPOINT, _METHOD, _HEADERS, _STATUS, _FAULT, _GONE = (
    _FIELDS.index(name) for name in ("endpoint", "method", "headers", "response_status", "fault",
                                     "client_disconnected"))

#: ``(endpoint, method, acknowledged, delivery key, whether the key is the webhook-id header)`` of a record
Receipt = tuple[str, str, bool, "str | None", bool]


def _acknowledged(status: int | None, fault: str | None, client_disconnected: bool) -> bool:
    return status is not None and 200 <= status < 300 and fault in (None, "slow_body") and not client_disconnected


def receipt(record: Record) -> Receipt:
    """What :meth:`Records.receipts` gives for one record."""
    return (record.endpoint, record.method, record.acknowledged, record.delivery_key,
            bool(record.headers.get("webhook-id")))


@dataclass
class CallbackRecord:
    """One results callback the endpoint sent back to the sender."""

    at: float
    endpoint: str
    url: str
    activity_id: str
    status: int | None  #: HTTP status of the callback, None when it failed
    error: str | None = None


@dataclass
class EndpointEvent:
    """The endpoint stopped or started listening (``down`` / ``up``)."""

    at: float
    endpoint: str
    event: str


@dataclass
class DuplicateInfo:
    """A payload key that arrived more than once: how often received and acknowledged, and the arrival numbers."""

    key: str
    received: int
    acknowledged: int
    seqs: list[int] = field(default_factory=list)


@dataclass
class OrderViolation:
    """The first place the acknowledged order differs from the expected one."""

    partition: str | None
    position: int  #: index in the partition's actual order
    expected: str
    actual: str

    def __str__(self) -> str:
        where = f" in partition {self.partition!r}" if self.partition is not None else ""
        return f"position {self.position}{where}: expected {self.expected!r}, got {self.actual!r}"


@dataclass
class OrderReport:
    """Whether the acknowledged order matched the expected one, and where it first did not."""

    ok: bool
    first_violation: OrderViolation | None
    actual: dict[str | None, list[str]]  #: acknowledged order per partition (None: unpartitioned)
    missing: list[str]  #: expected but never acknowledged (see also :meth:`Recorder.gaps`)
    unexpected: list[str]  #: acknowledged but not in the expected list


class _RecordFile:
    """Closed records, each a ``marshal``-ed tuple, in an unnamed temporary file (deleted when closed
    or collected). ``marshal`` because the file is private to this process and is read by the code
    that wrote it: it is several times faster than JSON both ways and keeps text byte for byte
    (lone surrogates included). Reads go through a block buffer: records are read back in about
    the order they were written."""

    _BLOCK = 1 << 18

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="dispatchsim-records-")  # noqa: SIM115 - lives with the records
        self._closer = weakref.finalize(self, self._file.close)
        self._size = 0
        self._dirty = False
        self._block_at = 0
        self._block = b""

    def put(self, data: bytes) -> int:
        """Append ``data``; its offset."""
        self._file.write(data)
        offset = self._size
        self._size += len(data)
        self._dirty = True
        return offset

    def get(self, offset: int, length: int) -> bytes:
        start = offset - self._block_at
        if 0 <= start and start + length <= len(self._block):
            return self._block[start:start + length]
        if self._dirty:
            self._file.flush()
            self._dirty = False
        self._block = os.pread(self._file.fileno(), max(length, self._BLOCK), offset)
        self._block_at = offset
        return self._block[:length]


class Records(Sequence[Record]):
    """A recorder's records in arrival order (``records[0]`` has ``seq`` 1).

    A long simulation records one request per attempt (100,000 and more), each with its headers
    and body: kept as objects they were most of its memory. Open records stay in memory (their
    endpoint is still filling them in); a closed one is written to a temporary file and read back
    when asked for, so the memory is a few bytes per record (where it is in the file).
    """

    def __init__(self, *, keep: bool = True) -> None:
        #: False: a closed record is stored as its receipt only (see :class:`Recorder`)
        self.keep = keep
        self._open: dict[int, Record] = {}  #: seq -> record not closed yet
        self._offsets = array("q")  #: by seq - 1: where the closed record is in the file; -1 while open
        self._lengths = array("l")
        self._file: _RecordFile | None = None
        #: changes of header values asked for after some records were stored (see Recorder.map_headers)
        self._maps: list[Callable[[str], str]] = []
        self._late_for = 0  #: len(_maps) the cache below was made for
        self._late_values: dict[int, dict[str, str]] = {}  #: by changes done at storing: value -> now

    def _add(self, record: Record) -> None:
        self._offsets.append(-1)
        self._lengths.append(0)
        self._open[record.seq] = record

    def _store(self, record: Record, i: int | None = None) -> None:
        """Write a closed record to the file; it is read from there from now on. ``i``: its place, when it
        is not its ``seq`` (a record file read back may hold any numbers)."""
        if self._file is None:
            self._file = _RecordFile()
        data = marshal.dumps((len(self._maps), _astuple(record) if self.keep else receipt(record)))
        i = record.seq - 1 if i is None else i
        self._offsets[i] = self._file.put(data)
        self._lengths[i] = len(data)
        self._open.pop(record.seq, None)

    def _load(self, i: int) -> Record:
        offset = self._offsets[i]
        if offset < 0:
            return self._open[i + 1]
        if not self.keep:
            raise RecordsNotKept(f"request {i + 1} was kept as its receipt only: the run was asked not to keep whole "
                                 "records (run_scenario(keep_records=False), Recorder(keep=False)); run with "
                                 "keep_records=True, or with --record, --json or --html, to read them")
        assert self._file is not None
        done, values = marshal.loads(self._file.get(offset, self._lengths[i]))
        record = Record(*values)
        if done < len(self._maps):
            headers = record.headers
            for key, value in headers.items():
                headers[key] = self._mapped(done, value)
        return record

    def _mapped(self, done: int, value: str) -> str:
        """A header value stored with ``done`` of the changes asked for, after all of them."""
        late = self._late(done)
        new = late.get(value)
        if new is None:
            new = value
            for change in self._maps[done:]:
                new = change(new)
            if len(late) < _SHARED_MAX:
                late[value] = new
        return new

    def receipts(self) -> Iterator[Receipt]:
        """Each record's :data:`Receipt`, in order, equal to ``receipt(record)`` for every record read
        back, but without making the records or changing every header value: what the expectations'
        counts and order check need of 10,000s of records (only a record without a webhook-id is made,
        to read its key from the body)."""
        for i in range(len(self._offsets)):
            offset = self._offsets[i]
            if offset < 0:
                yield receipt(self._open[i + 1])
                continue
            assert self._file is not None
            done, values = marshal.loads(self._file.get(offset, self._lengths[i]))
            if not self.keep:
                # the receipt itself; a webhook-id key changes as its header would have (a change that
                # empties it leaves no key, where the whole record would fall back to the body's id:
                # the scenario runner's change of ports never empties a value)
                endpoint, method, ack, key, by_header = values
                if by_header and done < len(self._maps):
                    key = self._mapped(done, key) or None
                yield endpoint, method, ack, key, by_header and key is not None
                continue
            headers = values[_HEADERS]
            if "webhook-id" in headers:
                key = headers["webhook-id"]
                if done < len(self._maps):
                    key = self._mapped(done, key)
                if key:
                    yield (values[_ENDPOINT], values[_METHOD],
                           _acknowledged(values[_STATUS], values[_FAULT], values[_GONE]), key, True)
                    continue
            yield receipt(self._load(i))

    def _late(self, done: int) -> dict[str, str]:
        """Header values after the changes asked for since a record was stored with ``done`` of them:
        records are read back several times (expectations, reports), each value once per change
        was most of reading one back."""
        if self._late_for != len(self._maps):
            self._late_values = {}
            self._late_for = len(self._maps)
        late = self._late_values.get(done)
        if late is None:
            late = self._late_values[done] = {}
        return late

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        if isinstance(i, slice):
            return [self._load(k) for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("record index out of range")
        return self._load(i)

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self._load(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Records, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Records: {len(self)}>"


#: the record's field values in order (``dataclasses.astuple`` would copy the headers deeply)
_astuple: Callable[[Record], tuple[Any, ...]] = operator.attrgetter(*_FIELDS)


class Recorder:
    """Everything the simulated endpoints saw, in arrival order, and the questions asked of it.

    Records requests (:attr:`records`), results callbacks (:attr:`callbacks`) and up/down changes
    (:attr:`events`); the reading methods answer ordering, duplicate and gap questions about them.
    Times are clock seconds; durations and latencies are rounded to the microsecond.

    ``keep=False``: nobody will read the records themselves (a quiet scenario run without a report
    that shows them), so a closed record is stored as its :data:`Receipt` only, and its headers are
    not shared with other records: about a thirtieth of a large simulation's CPU. :meth:`Records.receipts`
    and ``len(records)`` work as always; reading a closed record raises :class:`RecordsNotKept`.
    Listeners still get every record, whole, as it closes.
    """

    def __init__(self, *, keep: bool = True) -> None:
        self.records = Records(keep=keep)
        self.callbacks: list[CallbackRecord] = []
        self.events: list[EndpointEvent] = []
        self._listeners: list[Callable[[Record], None]] = []
        self._strings: dict[str, str] = {}

    # ---- writing (used by endpoints)

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        """Call ``listener(record)`` each time a record is closed (e.g. to log a line)."""
        self._listeners.append(listener)

    def open(self, **fields: Any) -> Record:
        """Times are kept to the microsecond, so float noise of the clock never reaches the record."""
        fields["at"] = _micro(fields["at"])
        fields["offset"] = _micro(fields["offset"])
        fields.pop("json", None)  # derived from the body on demand
        if self.records.keep:
            strings, shared = self._strings, self._shared
            fields["headers"] = {strings.get(k) or shared(k): strings.get(v) or shared(v)
                                 for k, v in fields["headers"].items()}
        record = Record(seq=len(self.records) + 1, **fields)
        self.records._add(record)
        return record

    def map_headers(self, change: Callable[[str], str]) -> None:
        """Replace every header value by ``change(value)``, e.g. the scenario runner naming the ports
        that change from run to run. Records still open change now; closed ones as they are read back."""
        done: dict[str, str] = {}

        def cached(value: str) -> str:
            new = done.get(value)
            if new is None:
                new = self._shared(change(value))
                if len(done) < _SHARED_MAX:
                    done[value] = new
            return new

        for record in self.records._open.values():
            headers = record.headers
            for key, value in headers.items():
                headers[key] = cached(value)
        self.records._maps.append(cached)

    def _shared(self, text: str) -> str:
        """One string object for equal header names and values: most repeat on every request
        (``content-type``, ``host``, ``user-agent`` …), and tens of thousands of records each
        holding its own copies were a large part of a long simulation's memory. The table stops
        growing at ``_SHARED_MAX`` distinct strings (ids and signatures never repeat much)."""
        shared = self._strings.get(text)
        if shared is not None:
            return shared
        if len(self._strings) < _SHARED_MAX:
            self._strings[text] = text
        return text

    def close(self, record: Record, at: float) -> None:
        """Finish a record when its response is sent, and tell the listeners; a second call is ignored."""
        if record.duration is not None:
            return
        record.duration = _micro(at - record.at)
        record.latency = _micro(record.latency)
        for listener in self._listeners:
            listener(record)
        self.records._store(record)

    # ---- reading

    def for_endpoint(self, name: str) -> list[Record]:
        """The records of one endpoint, in arrival order."""
        return list(self._select(name))

    def _select(self, endpoint: str | None) -> Iterator[Record]:
        return iter(self.records) if endpoint is None else (r for r in self.records if r.endpoint == endpoint)

    @staticmethod
    def _deliveries(records: Iterable[Record]) -> Iterator[Record]:
        """Deliveries only: not verification GETs, not requests to unknown paths."""
        return (r for r in records if r.method not in ("GET", "HEAD") and r.note != "no such path")

    def deliveries(self, endpoint: str | None = None) -> dict[str, DuplicateInfo]:
        """Every delivery key with how often it was received and acknowledged."""
        out: dict[str, DuplicateInfo] = {}
        for r in self._deliveries(self._select(endpoint)):
            key = r.delivery_key
            if key is None:
                continue
            info = out.setdefault(key, DuplicateInfo(key, 0, 0))
            info.received += 1
            info.acknowledged += r.acknowledged
            info.seqs.append(r.seq)
        return out

    def duplicates(self, endpoint: str | None = None) -> dict[str, DuplicateInfo]:
        """Keys (``webhook-id``, else payload ``id``) received more than once."""
        return {k: v for k, v in self.deliveries(endpoint).items() if v.received > 1}

    def order(self, endpoint: str | None = None, key: str = "id", *, acknowledged: bool = True) -> list[str]:
        """Keys in order of first acknowledgement (or of first arrival with ``acknowledged=False``)."""
        seen: dict[str, None] = {}
        for r in self._deliveries(self._select(endpoint)):
            if acknowledged and not r.acknowledged:
                continue
            for k in _keys(r, key):
                seen.setdefault(k, None)
        return list(seen)

    def partitions(self, endpoint: str | None, partition_key: str, key: str = "id") -> dict[str, list[str]]:
        """Acknowledged order per value of ``partition_key`` (a payload field, dotted paths allowed)."""
        out: dict[str, list[str]] = {}
        part_of = self._partition_map(endpoint, partition_key, key)
        for k in self.order(endpoint, key):
            out.setdefault(part_of.get(k, ""), []).append(k)
        return out

    def _partition_map(self, endpoint: str | None, partition_key: str, key: str) -> dict[str, str]:
        part_of: dict[str, str] = {}
        for r in self._deliveries(self._select(endpoint)):
            body = r.json
            for item in (body if isinstance(body, list) else [body]):
                k, p = lookup(item, key), lookup(item, partition_key)
                if k is not _MISSING and p is not _MISSING:
                    part_of.setdefault(str(k), str(p))
        return part_of

    def check_order(self, endpoint: str | None, expected: list[str], partition_key: str | None = None, *,
                    key: str = "id", strict: bool = False) -> OrderReport:
        """Were deliveries acknowledged in ``expected`` order (per partition when ``partition_key``)?

        Plain mode compares the order of first acknowledgements. ``strict`` also requires that
        nothing arrived (not even a failing attempt) before every earlier item that was ever
        acknowledged had been acknowledged — the seeds' "postponed until the successful delivery
        of the first one". Items never acknowledged (e.g. skipped after FAILED) do not block.
        """
        expected = [str(e) for e in expected]
        part_of = self._partition_map(endpoint, partition_key, key) if partition_key else {}

        def part(k: str) -> str | None:
            return part_of.get(k, "") if partition_key else None

        acked = self.order(endpoint, key)
        exp_set = set(expected)
        actual: dict[str | None, list[str]] = {}
        for k in acked:
            if k in exp_set:
                actual.setdefault(part(k), []).append(k)
        acked_set = set(acked)
        missing = [k for k in expected if k not in acked_set]
        unexpected = [k for k in acked if k not in exp_set]

        violation: OrderViolation | None = None
        for p, got in actual.items():
            want = [k for k in expected if k in acked_set and part(k) == p]
            for i, (w, g) in enumerate(zip(want, got)):
                if w != g:
                    violation = _earliest(violation, OrderViolation(p, i, w, g))
                    break
        if violation is None and strict:
            violation = self._strict_violation(endpoint, expected, key, part)
        return OrderReport(violation is None, violation, actual, missing, unexpected)

    def _strict_violation(self, endpoint: str | None, expected: list[str], key: str,
                          part: Callable[[str], str | None]) -> OrderViolation | None:
        ack_seq: dict[str, int] = {}
        for r in self._deliveries(self._select(endpoint)):
            if r.acknowledged:
                for k in _keys(r, key):
                    ack_seq.setdefault(k, r.seq)
        position = {k: i for i, k in enumerate(expected)}
        # per item: the latest acknowledgement among earlier items of its partition, and whose it was
        barrier: dict[str, tuple[int, str | None]] = {}
        running: dict[str | None, tuple[int, str | None]] = {}
        for k in expected:
            p = part(k)
            barrier[k] = running.get(p, (0, None))
            if k in ack_seq and ack_seq[k] > barrier[k][0]:
                running[p] = (ack_seq[k], k)
        for r in self._deliveries(self._select(endpoint)):
            for k in _keys(r, key):
                if k in position and r.seq < barrier[k][0]:
                    return OrderViolation(part(k), position[k], barrier[k][1] or "?", k)
        return None

    def gaps(self, endpoint: str | None = None, expected: list[str] | None = None, *, key: str = "id") -> list[str]:
        """What never got acknowledged: the ``expected`` keys missing, or — without ``expected`` —
        the integers missing between the smallest and largest integer keys acknowledged."""
        acked = self.order(endpoint, key)
        if expected is not None:
            have = set(acked)
            return [str(k) for k in expected if str(k) not in have]
        numbers = sorted({int(k) for k in acked if k.lstrip("-").isdigit()})
        if not numbers:
            return []
        present = set(numbers)
        return [str(n) for n in range(numbers[0], numbers[-1] + 1) if n not in present]

    def retry_intervals(self, webhook_id: str, endpoint: str | None = None) -> list[float]:
        """Clock seconds between successive arrivals of one delivery (by :attr:`Record.delivery_key`)."""
        times = [r.at for r in self._deliveries(self._select(endpoint)) if r.delivery_key == webhook_id]
        return [b - a for a, b in zip(times, times[1:])]

    # ---- export

    def to_jsonl(self, path_or_file: str | os.PathLike[str] | IO[str]) -> None:
        """One JSON object per record, in arrival order, keys sorted (byte-identical for one seed)."""
        if hasattr(path_or_file, "write"):
            self._write(path_or_file)  # type: ignore[arg-type]
            return
        with open(path_or_file, "w", encoding="utf-8") as fh:  # type: ignore[arg-type]
            self._write(fh)

    def _write(self, fh: IO[str]) -> None:
        for line in self.lines():
            fh.write(line)

    def lines(self) -> Iterator[str]:
        """Each record as one JSON line (newline-terminated), keys sorted, read one at a time."""
        for r in self.records:
            yield json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False) + "\n"

    def jsonl(self) -> str:
        """Every record as JSON Lines text, keys sorted, so equal runs give equal text (a long run's
        is large: :meth:`to_jsonl` and :meth:`lines` do not hold it all)."""
        return "".join(self.lines())

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str]) -> Recorder:
        """Read back a record file written from :meth:`jsonl` (callbacks and events are not in it)."""
        rec = cls()
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    row.pop("json", None)
                    record = Record(**row)
                    rec.records._add(record)
                    rec.records._store(record, len(rec.records) - 1)
        return rec


def _micro(seconds: float) -> float:
    return round(seconds, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def _keys(record: Record, key: str) -> list[str]:
    """The ordering keys a record carries: one per object (batches carry several)."""
    body = record.json
    items = body if isinstance(body, list) else [body]
    out = []
    for item in items:
        value = lookup(item, key)
        if value is not _MISSING and value is not None:
            out.append(str(value))
    if not out and key in ("webhook-id", "id") and record.delivery_key is not None and not isinstance(body, list):
        out.append(record.delivery_key)
    return out


def _earliest(a: OrderViolation | None, b: OrderViolation) -> OrderViolation:
    return b if a is None or b.position < a.position else a
