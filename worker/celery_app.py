"""The worker's Celery app: `celery -A worker.celery_app worker -Q training -c 1`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import billiard
from celery.signals import task_prerun, worker_process_init, worker_ready, worker_shutting_down

from service import db
from service.queue import get_celery
from service.reconcile import reconciler_thread
from service.routing import record_served
from service.settings import get_settings
from worker.reporting import SHUTDOWN

log = logging.getLogger(__name__)
app = get_celery()
app.conf.include = ["worker.tasks"]

# How the worker tells its prefork pool process to hand its job back; SIGTERM stays the pool's own "die now".
HAND_BACK_SIGNAL = signal.SIGUSR2
RECORD_ATTEMPTS = 5


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # A forked pool process must not reuse the parent's database connections.
    db.reset()


@task_prerun.connect
def _listen_for_hand_back(**_kwargs) -> None:
    # Here, not at process init: billiard resets the pool process's signal handlers after its initializer.
    if threading.current_thread() is threading.main_thread():
        signal.signal(HAND_BACK_SIGNAL, lambda *_: SHUTDOWN.set())


@worker_ready.connect
def _start_reconciler(**_kwargs) -> None:
    # Every worker runs one (celery beat is not needed): lost messages and dead workers are found from the
    # job rows, and concurrent passes are safe (service/reconcile.py).
    interval = get_settings().reconcile_seconds
    if interval > 0:
        reconciler_thread(interval).start()


@worker_ready.connect
def _record_served_queues(sender=None, **_kwargs) -> None:
    # What this worker consumes, so that the API refuses a job asking for a GPU class no worker serves.
    queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    for attempt in range(1, RECORD_ATTEMPTS + 1):  # a busy SQLite file, or a database restarting
        try:
            with db.session_scope() as session:
                record_served(session, queues, f"{socket.gethostname()} pid {os.getpid()}")
            return
        except Exception:  # still down: the worker trains all the same, and records them at its next start
            if attempt == RECORD_ATTEMPTS:
                log.warning("could not record the queues this worker serves (%s)", ", ".join(queues), exc_info=True)
            else:
                time.sleep(attempt)


@worker_shutting_down.connect
def _hand_back_running_jobs(**_kwargs) -> None:
    # A warm shutdown (SIGTERM: a deploy) would wait for a run of hours; instead the run checkpoints at its
    # next step boundary and requeues its job, and the task returns. The solo pool runs it in this process,
    # a prefork pool in a child that hears of it by signal.
    SHUTDOWN.set()
    for child in billiard.active_children():
        try:
            os.kill(child.pid, HAND_BACK_SIGNAL)
        except ProcessLookupError:
            pass  # it just exited
