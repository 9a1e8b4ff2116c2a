"""``dispatchsim provider``: run the simulated endpoints in real time for a person to point a sender at.

Logs one line per request (time, endpoint, method, path, outcome) and writes the record as
JSON lines when stopped with Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any

from dispatchsim.cliargs import port
from dispatchsim.outputs import check_output_file, write_output

from .config import ProvidersConfig, load_config
from .endpoint import EndpointSet
from .errors import ProviderConfigError
from .recorder import Record


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``provider`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "provider",
        help="run simulated provider endpoints (real time) and record what they receive",
        description="Run the endpoints described in a providers YAML file on 127.0.0.1 until Ctrl-C, "
                    "logging one line per request, then write the record as JSON lines.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="providers YAML file")
    parser.add_argument("--port", type=port, default=None, metavar="P",
                        help="port of the first endpoint; the next ones get P+1, P+2 … "
                             "(an endpoint's own 'port:' wins; default: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="IP address to bind (default 127.0.0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the endpoints' randomness (default 0)")
    parser.add_argument("--record", default="provider-record.jsonl", metavar="FILE",
                        help="where to write the record on exit (default provider-record.jsonl)")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ProviderConfigError as exc:
        for problem in exc.errors:
            print(f"error: {problem.located()}", file=sys.stderr)
        return 2
    # checked (its folder made) before serving: the record is written only at the end, and was lost
    unwritable = check_output_file("--record", args.record)
    if unwritable is not None:
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config, port=args.port, host=args.host, seed=args.seed, record=args.record))
    except ProviderConfigError as exc:
        for problem in exc.errors:
            print(f"error: {problem.located()}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # standard output was closed, not a socket problem: the command stops quietly (dispatchsim.cli)
    except OSError as exc:
        print(f"error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1


def assign_ports(config: ProvidersConfig, base: int | None) -> dict[str, int]:
    """``--port P``: endpoints without their own ``port:`` get P, P+1, … in config order."""
    if base is None:
        return {}
    taken = {e.port for e in config.endpoints.values() if e.port}
    out: dict[str, int] = {}
    nxt = base
    for name, endpoint in config.endpoints.items():
        if endpoint.port:
            continue
        while nxt in taken:
            nxt += 1
        out[name] = nxt
        taken.add(nxt)
        nxt += 1
    return out


async def serve(config: ProvidersConfig, *, port: int | None = None, host: str = "127.0.0.1", seed: int = 0,
                record: str = "provider-record.jsonl", out: IO[str] | None = None,
                stop: asyncio.Event | None = None) -> int:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM), then write the record. The CLI's body."""
    out = out or sys.stdout
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass

    closed = False

    def log(line: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            out.write(line + "\n")
            out.flush()
        except BrokenPipeError:  # the reader went away (`| head`): stop as a piped command does, record kept
            closed = True
            stop.set()

    endpoints = EndpointSet(config, seed=seed, now=time.time, host=host, ports=assign_ports(config, port))
    endpoints.recorder.subscribe(lambda r: log(format_record(r)))
    started, unwritten = False, None
    try:
        async with endpoints:
            started = True
            for name in config.endpoints:
                log(f"{name}: {endpoints.url(name)}")
            log("Ctrl-C to stop")
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        if started:  # endpoints that never listened received nothing: a record already in the file is kept
            unwritten = write_output("--record", record, lambda: endpoints.recorder.to_jsonl(record))
            if unwritten is None:
                log(f"wrote {len(endpoints.recorder.records)} records to {record}")
            else:
                print(f"error: {unwritten}", file=sys.stderr)
    if closed:
        raise BrokenPipeError("standard output was closed")  # the command exits quietly (dispatchsim.cli)
    return 0 if unwritten is None else 2


def format_record(r: Record) -> str:
    when = datetime.fromtimestamp(r.at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    key = r.delivery_key
    extra = f" id={key}" if key else ""
    note = f" ({r.note})" if r.note else ""
    latency = f" after {r.latency:.3f}s" if r.latency else ""
    return f"{when} {r.endpoint} {r.method} {r.path} -> {r.outcome()}{latency}{note}{extra}"


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m providers.cli provider --config FILE``)."""
    parser = argparse.ArgumentParser(prog="dispatchsim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
