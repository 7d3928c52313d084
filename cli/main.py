"""`adalora-svc`: migrate the database, manage API keys, run the API, a worker, or both for development, and
run one reconciler pass on demand."""

from __future__ import annotations

import argparse
import copy
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cli.dev import PortTaken, StopOnSignals, announce_when_listening, check_port_free, default_folders, stop
from service.jobspec import GPU_CLASS
from service.settings import VAR_DIR, get_settings

REPO = Path(__file__).resolve().parents[1]
DEV_KEY_FILE = VAR_DIR / "dev-api-key"
DEV_TENANT = "dev"


def migrate() -> None:
    """alembic upgrade head on DATABASE_URL: the only way tables are created."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("script_location", str(REPO / "migrations"))
    command.upgrade(config, "head")


def create_key(tenant: str, name: str | None) -> str:
    from service.db import session_scope
    from service.keys import create_api_key

    with session_scope() as session:
        return create_api_key(session, tenant, name)


def revoke_key(prefix: str) -> bool:
    from service.db import session_scope
    from service.keys import revoke_api_key

    with session_scope() as session:
        return revoke_api_key(session, prefix)


def revoke_tenant(tenant: str) -> int | None:
    from service.db import session_scope
    from service.keys import revoke_tenant_keys

    with session_scope() as session:
        return revoke_tenant_keys(session, tenant)


def list_keys(tenant: str | None) -> list[str]:
    """A line per key: tenant, prefix (what revoke-key takes), state, name and dates."""
    from service.db import session_scope
    from service.keys import list_api_keys

    def day(moment) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"

    with session_scope() as session:
        return [f"{key.tenant.name}\t{key.prefix}\t{'revoked ' + day(key.revoked_at) if key.revoked_at else 'active'}"
                f"\tcreated {day(key.created_at)}\tlast used {day(key.last_used_at)}\t{key.name or ''}".rstrip()
                for key in list_api_keys(session, tenant)]


def reconcile_now() -> list[str]:
    """One reconciler pass (what each worker runs every RECONCILE_SECONDS); returns a line per kind of action."""
    from service.db import session_scope
    from service.reconcile import reconcile
    from service.tables import utcnow

    with session_scope() as session:
        done = reconcile(session, utcnow())
    lines = [f"{label}: {len(ids)}" + (f" ({', '.join(ids)})" if ids else "") for label, ids in (
        ("re-sent (queued, message presumed lost)", done.resent),
        ("requeued (worker stopped responding)", done.requeued),
        ("failed (worker stopped responding MAX_ATTEMPTS times)", done.failed),
        ("cancelled (cancel requested, then the worker stopped)", done.cancelled))]
    return [*lines, f"expired idempotency keys deleted: {done.expired_keys}"]


# An API key anywhere in a log line (a client that put it in the URL: the access log prints the whole path).
KEY_IN_TEXT = re.compile(r"\b(ada_[0-9a-f]{1,32}_)[A-Za-z0-9_-]+")


def redact_keys(text: str) -> str:
    """`ada_<prefix>_<secret>` becomes `ada_<prefix>_***`: the prefix still tells an operator which key it was."""
    return KEY_IN_TEXT.sub(r"\1***", text)


class RedactKeys(logging.Filter):
    """A log filter that takes API keys' secrets out of the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_keys(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_keys(a) if isinstance(a, str) else a for a in record.args)
        return True


def serve(host: str, port: int, on_listening: Callable[[], None] | None = None) -> None:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    logging_config = copy.deepcopy(LOGGING_CONFIG)
    logging_config.setdefault("filters", {})["redact_keys"] = {"()": RedactKeys}
    for handler in logging_config["handlers"].values():
        handler.setdefault("filters", []).append("redact_keys")
    from cli.header_limits import BoundedHeadersProtocol

    server = uvicorn.Server(uvicorn.Config("api.main:app", host=host, port=port, proxy_headers=True,
                                           log_config=logging_config, http=BoundedHeadersProtocol))
    if on_listening is not None:
        announce_when_listening(server, on_listening)
    server.run()


def worker(loglevel: str, classes: list[str]) -> None:
    """One worker process trains one job at a time (one GPU per worker): jobs of any class, and jobs that ask
    for one of `classes`."""
    from service.routing import worker_queues
    from worker.celery_app import app

    app.worker_main(["worker", "-Q", ",".join(worker_queues(classes)), "--concurrency", "1", "--loglevel", loglevel,
                     "--without-gossip", "--without-mingle"])


def gpu_classes(text: str) -> list[str]:
    """--queues gpu-80g,gpu-24g: class names as a job spec's resources.queue takes them."""
    classes = [part.strip() for part in text.split(",") if part.strip()]
    for name in classes:
        if not re.match(GPU_CLASS, name):
            raise argparse.ArgumentTypeError(f"{name!r}: a class is lowercase letters, digits and dashes "
                                             "(up to 63), e.g. gpu-80g")
    return classes


def dev(host: str, port: int) -> int:
    """The embedded mode on one machine: migrate, a development key, a worker subprocess and the API."""
    stop_requests = StopOnSignals()
    try:
        check_port_free(host, port)
    except PortTaken as taken:
        print(f"adalora-svc dev: {taken}", file=sys.stderr)
        return 1
    default_folders()
    get_settings.cache_clear()
    settings = get_settings()
    migrate()
    key = dev_key()
    # Its own session: a signal to our process group reaches only this process, which stops the worker once.
    worker_process = subprocess.Popen([sys.executable, "-m", "cli", "worker"], start_new_session=True)
    url = f"http://{host}:{port}"

    def banner() -> None:
        print(f"\nAdaLoRA service (embedded: {without_password(settings.database_url)}, "
              f"broker {without_password(settings.effective_broker_url)})\n"
              f"  API      {url}/v1\n  Docs     {url}/docs\n  Browser  {url}/dashboard/\n  API key  {key}\n"
              f"  Models   {', '.join(map(str, settings.model_dirs))}\n"
              f"  Data     {', '.join(map(str, settings.data_dirs))}\n"
              f"  Try      curl -H 'Authorization: Bearer {key}' {url}/v1/models\n", flush=True)

    try:
        serve(host, port, on_listening=banner)
    except SystemExit as stopped:  # a signal (StopOnSignals), or uvicorn giving up at start-up
        return stop_requests.exit_code(stopped)
    finally:
        stop(worker_process)
    return stop_requests.exit_code(None)


def without_password(url: str) -> str:
    """A database or broker URL fit to print or log: its password, if any, as ***."""
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def dev_key() -> str:
    """The development key, kept in var/ so restarts reuse it; a fresh one if it was revoked or lost."""
    from service.db import session_scope
    from service.keys import tenant_for_key

    if DEV_KEY_FILE.exists():
        key = DEV_KEY_FILE.read_text().strip()
        with session_scope() as session:
            if tenant_for_key(session, key) is not None:
                return key
    key = create_key(DEV_TENANT, "adalora-svc dev")
    DEV_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    DEV_KEY_FILE.touch(mode=0o600)
    DEV_KEY_FILE.write_text(key + "\n")
    return key


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adalora-svc", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or upgrade the tables (alembic upgrade head)")
    key = commands.add_parser("create-key", help="create an API key for a tenant (created if new); printed once")
    key.add_argument("--tenant", required=True)
    key.add_argument("--name", help="a note on what the key is for")
    revoke = commands.add_parser("revoke-key", help="revoke an API key by its prefix (the part after `ada_`)")
    revoke.add_argument("prefix")
    revoke_all = commands.add_parser("revoke-tenant", help="revoke every key of a tenant; its jobs and files stay")
    revoke_all.add_argument("tenant")
    listing = commands.add_parser("list-keys", help="list keys (prefix, state, dates); never the secrets")
    listing.add_argument("--tenant")
    commands.add_parser("reconcile", help="one reconciler pass now: re-send lost messages, requeue or fail jobs "
                                          "whose worker died, delete expired Idempotency-Key answers")
    for name, help_text in (("serve", "run the API"), ("dev", "migrate, then run the API and a worker")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=os.environ.get("PORT") or "8000",
                         help="default: $PORT, else 8000")
    run_worker = commands.add_parser("worker", help="run a training worker (one job at a time)")
    run_worker.add_argument("--loglevel", default="info")
    run_worker.add_argument("--queues", type=gpu_classes, default=[], metavar="CLASS,...",
                            help="GPU classes this worker also serves (e.g. gpu-80g,gpu-24g); a job asks for one "
                                 "with resources.queue. Jobs without a class run on any worker")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "migrate":
        migrate()
    elif args.command == "create-key":
        print(create_key(args.tenant, args.name))
    elif args.command == "revoke-key":
        if not revoke_key(args.prefix):
            print(f"no active key with prefix {args.prefix!r}", file=sys.stderr)
            return 1
    elif args.command == "revoke-tenant":
        revoked = revoke_tenant(args.tenant)
        if revoked is None:
            print(f"no tenant named {args.tenant!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked} key(s) of {args.tenant!r}")
    elif args.command == "list-keys":
        print("\n".join(list_keys(args.tenant)))
    elif args.command == "reconcile":
        print("\n".join(reconcile_now()))
    elif args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "worker":
        worker(args.loglevel, args.queues)
    elif args.command == "dev":
        try:
            return dev(args.host, args.port)
        except KeyboardInterrupt:  # Ctrl+C: uvicorn stopped, the worker too (dev's finally)
            return 130
    return 0
