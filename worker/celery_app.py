"""The worker's Celery app: `celery -A worker.celery_app worker -Q training -c 1`."""

from __future__ import annotations

from celery.signals import worker_process_init

from service import db
from service.queue import get_celery

app = get_celery()
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # A forked pool process must not reuse the parent's database connections.
    db.reset()
