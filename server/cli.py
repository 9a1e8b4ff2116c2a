"""``dispatchsim serve`` and ``dispatchsim keys create``: thin shells over ``dispatchsim.server.serve`` and ``dispatchsim.server.keys``."""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from dispatchsim.engine import DispatchsimError
from dispatchsim.cliargs import duration, port
from dispatchsim.errors import LocatedError


def _serve(args: argparse.Namespace) -> int:
    from dispatchsim.server.serve import ServeOptions, load_serve_config, serve

    opts = ServeOptions(db=args.db, host=args.host, port=args.port, shutdown_deadline=args.shutdown_deadline,
                        log_format=args.log_format)
    if args.config:
        try:
            load_serve_config(args.config, opts)
        except LocatedError as exc:  # every mistake in the file, one located line each
            for problem in exc.errors:
                print(problem.located(), file=sys.stderr)
            print("dispatchsim serve: invalid --config file; nothing was started", file=sys.stderr)
            return 2
    try:
        return asyncio.run(serve(opts, on_ready=_freeze_startup_objects))
    except DispatchsimError as exc:
        print(f"dispatchsim serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dispatchsim serve: {exc.filename or args.db}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _freeze_startup_objects(_server: object) -> None:
    """Move everything allocated at startup (modules, app, routes, ~65,000 objects) out of the
    cyclic garbage collector's reach: a full collection then scans only what was allocated since,
    instead of pausing the event loop (and every API request) for ~40-60 ms a few times a minute."""
    import gc

    gc.collect()
    gc.freeze()


def _blocking(command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    """A key command for the CLI: its store operations are coroutines, run here on a loop of their own."""
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))
    return run


async def _keys_create(args: argparse.Namespace) -> int:
    import time

    from dispatchsim.server.keys import check_key_name, create_key
    from dispatchsim.engine import check_id, check_store, display_url, open_store

    if bool(args.admin) == bool(args.tenant):
        print("dispatchsim keys create: give exactly one of --admin or --tenant ID", file=sys.stderr)
        return 2
    try:  # the rules the API applies, before the database is opened
        if args.tenant:
            check_id("tenant", args.tenant)
        check_key_name(args.name)
        check_store(args.db, write=True)
        store = await open_store(args.db)
    except DispatchsimError as exc:
        print(f"dispatchsim keys create: {exc}", file=sys.stderr)
        return 2
    try:
        if args.tenant and await store.tenant(args.tenant) is None and args.create_tenant:
            await store.add_tenant(args.tenant, args.tenant, time.time())
        key_id, key = await create_key(store, tenant_id=args.tenant, name=args.name, now=time.time())
    except DispatchsimError as exc:
        print(f"dispatchsim keys create: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    who = "admin" if args.admin else f"tenant {args.tenant}"
    print(key)
    print(f"({key_id}, {who}; shown once: only its hash is stored in {display_url(args.db)})", file=sys.stderr)
    return 0


async def _keys_list(args: argparse.Namespace) -> int:
    from dispatchsim.engine import iso, printable
    from dispatchsim.server.keys import list_keys
    from dispatchsim.engine import check_store, open_store

    check_store(args.db, write=False)
    store = await open_store(args.db, readonly=True)
    try:
        for k in await list_keys(store):
            print(f"{k.id}  {printable(k.tenant_id) or 'admin':<20} {iso(k.created_at)}  {printable(k.name)}"
                  + ("  revoked" if k.revoked_at else ""))
    finally:
        await store.close()
    return 0


async def _keys_change(args: argparse.Namespace) -> int:
    """``keys revoke`` and ``keys rotate``: one transaction on the database, the new key printed once."""
    import time

    from dispatchsim.engine import check_store, open_store
    from dispatchsim.server.keys import revoke_key, rotate_key

    what = f"dispatchsim keys {args.keys_command}"
    try:
        check_store(args.db, write=True)
        store = await open_store(args.db)
    except DispatchsimError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.keys_command == "revoke":
            await revoke_key(store, args.key_id, now=time.time())
            print(f"{args.key_id} revoked: it no longer works", file=sys.stderr)
            return 0
        new_id, key = await rotate_key(store, args.key_id, now=time.time())
    except DispatchsimError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    print(key)
    print(f"({new_id} replaces {args.key_id}, which no longer works; shown once: only its hash is stored)",
          file=sys.stderr)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the engine with its HTTP API on the real clock",
                       description="Run the dispatch engine as a service: HTTP API under /api/, /healthz, /metrics, "
                                   "message-event webhooks, recurring jobs. SIGTERM/SIGINT stop it gracefully; "
                                   "a restart on the same --db resumes.")
    p.add_argument("--db", required=True, help="SQLite file (created if missing), or a postgresql:// URL shared by "
                   "several workers (the password may come from PGPASSWORD or ~/.pgpass)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port, default=8080, help="port (default: 8080; 0 picks a free one)")
    p.add_argument("--config", metavar="FILE", help="YAML: keys (admin or per tenant), tenants, providers, jobs")
    p.add_argument("--shutdown-deadline", type=duration, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, how long attempts in flight may finish (default: 10)")
    p.add_argument("--log-format", choices=("json", "console"), default="json", help="event log on stderr")
    p.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="API keys of serve mode",
                          description="Create, list, revoke and rotate API keys (only a hash is stored).")
    ksub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    c = ksub.add_parser("create", help="create a key and print it once",
                        description="Create an API key: --admin manages tenants and providers and sees "
                                    "everything; --tenant ID sees that tenant's data only.")
    c.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    c.add_argument("--admin", action="store_true", help="an admin key")
    c.add_argument("--tenant", metavar="ID", help="a key for this tenant")
    c.add_argument("--create-tenant", action="store_true", help="create the tenant if missing")
    c.add_argument("--name", help="a label for the key")
    c.set_defaults(func=_blocking(_keys_create))
    ls = ksub.add_parser("list", help="list keys (ids and owners, never the keys)")
    ls.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    ls.set_defaults(func=_blocking(_keys_list))
    for name, text in (("revoke", "revoke a key: it stops working at once"),
                       ("rotate", "replace a key by a new one (printed once); the old one stops working")):
        k = ksub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        k.add_argument("key_id", metavar="KEY_ID", help="the key's id (key_…, see keys list)")
        k.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
        k.set_defaults(func=_blocking(_keys_change))
