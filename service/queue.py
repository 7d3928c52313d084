"""The Celery app configuration and the one task name. The API imports this module, never worker/.

The broker only carries job ids; the job row is the truth, so there is no result backend.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from celery import Celery
from kombu import Queue

from service.settings import Settings, get_settings

RUN_JOB_TASK = "adalora.run_job"


def make_celery(settings: Settings) -> Celery:
    broker, queue = settings.effective_broker_url, settings.queue_name
    _make_sqlite_parent(broker)
    app = Celery("adalora", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=queue,
        task_queues=[Queue(queue)],
        task_routes={RUN_JOB_TASK: {"queue": queue}},
        # Ack after the run, and requeue if the worker dies: the atomic claim makes a redelivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job per worker process at a time; never reserve a second message while training.
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_transport_options=_transport_options(broker, settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def _transport_options(broker: str, settings: Settings) -> dict:
    if broker.startswith(("redis://", "rediss://")):
        # Redis redelivers unacked messages after this; keep it above the longest allowed run.
        return {"visibility_timeout": settings.task_time_limit + 3600}
    return {}  # the SQLAlchemy transport hands these to create_engine, which rejects unknown keys


def _make_sqlite_parent(url: str) -> None:
    if url.startswith("sqla+sqlite:///"):
        Path(url.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def enqueue_job(job_id: str, spec: dict) -> str:
    """Send the job to its queue (service.routing); call only after the job row is committed. Returns the
    task id."""
    from service.routing import queue_for

    app = get_celery()
    # A connection of our own per send, not kombu's process-wide producer pool: that pool is keyed by broker URL
    # and shared by every Celery app in the process, so one app's closed channel could be handed to another.
    # A send is one job submission; a connect per send costs a millisecond.
    with app.connection_for_write() as connection:
        result = app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue_for(spec), connection=connection)
    return result.id


def broker_reachable(timeout: float = 2.0) -> bool:
    """For readiness checks: can we open a connection to the broker right now?"""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
