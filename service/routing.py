"""GPU classes: a worker serves the default queue (QUEUE_NAME) and the classes it is started with
(`adalora-svc worker --queues gpu-80g,gpu-24g`, broker queues QUEUE_NAME.gpu-80g ...); a job spec may ask for
one class (`resources.queue`), otherwise any worker takes it. Workers record the queues they consume, so a
job asking for a class that no worker has ever served is refused when it is submitted, not left queued."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import rowcount
from service.settings import get_settings
from service.tables import WorkerQueue, utcnow


def class_queue(gpu_class: str) -> str:
    return f"{get_settings().queue_name}.{gpu_class}"


def queue_for(spec: dict) -> str:
    """The broker queue of a stored job spec: its class's, or the default queue every worker serves."""
    gpu_class = (spec.get("resources") or {}).get("queue")
    return class_queue(gpu_class) if gpu_class else get_settings().queue_name


def worker_queues(classes: list[str]) -> list[str]:
    """What a worker started for `classes` consumes: the default queue first, then one per class."""
    return [get_settings().queue_name, *(class_queue(c) for c in classes)]


def record_served(session: Session, queues: list[str], worker: str) -> None:
    """A worker is consuming `queues`; the caller commits."""
    now = utcnow()
    for name in queues:
        seen = rowcount(session, update(WorkerQueue).where(WorkerQueue.name == name)
                        .values(last_seen_at=now, last_worker=worker[:200]))
        if not seen:
            try:
                with session.begin_nested():  # a worker starting at the same moment may insert it first
                    session.add(WorkerQueue(name=name, first_seen_at=now, last_seen_at=now, last_worker=worker[:200]))
            except IntegrityError:
                pass


def unserved_class_problem(session: Session, gpu_class: str | None) -> str | None:
    """Why a job asking for `gpu_class` would never run, or None when some worker has served it."""
    if gpu_class is None or session.get(WorkerQueue, class_queue(gpu_class)) is not None:
        return None
    prefix = f"{get_settings().queue_name}."
    served = sorted(name.removeprefix(prefix) for name in session.scalars(
        select(WorkerQueue.name).where(WorkerQueue.name.startswith(prefix, autoescape=True))))
    return (f"no worker has served the class {gpu_class!r} (classes served: {', '.join(served) or 'none'}); "
            f"start one with `adalora-svc worker --queues {gpu_class}`, or leave resources.queue out to run on "
            "any worker")
