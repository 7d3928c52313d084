"""The heartbeat: a thread that stamps the job row while the run lives, so a reconciler can tell a dead worker
from a busy one."""

from __future__ import annotations

from service.lifecycle import beat
from service.periodic import Periodic
from worker.db_link import DatabaseLink, DatabaseUnavailable, run_link


def heartbeat(job_id: str, interval: float, link: DatabaseLink | None = None) -> Periodic:
    """Stamps the job row every `interval` seconds from a thread, so a long model load or evaluation never
    looks like a dead worker. Use as a context manager around the run. During an outage it skips the beats
    the link's backoff says are not due; the run itself reports an outage that outlasts the limit."""
    link = link or run_link(job_id)

    def beat_once() -> None:
        try:
            link.try_once(lambda session: beat(session, job_id), "the heartbeat")
        except DatabaseUnavailable:
            pass
    return Periodic(f"heartbeat-{job_id}", interval, beat_once)
