"""Deleting a finished job: its row (and with it, by cascade, its metrics, rank snapshots, events, checkpoint
and download rows), then its objects in the artifact store. A job that is still queued or running, or that an
unfinished job starts from (from_checkpoint), is kept."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.artifacts import job_key
from service.db import rowcount
from service.store import StoreUnavailable, get_store
from service.tables import FINISHED_STATUSES, UNFINISHED_STATUSES, Job

log = logging.getLogger(__name__)


class JobInUse(Exception):
    """Why the job cannot be deleted now, worded for the user."""


def delete_finished_job(session: Session, job: Job) -> None:
    if job.status not in FINISHED_STATUSES:
        raise JobInUse(f"job is {job.status}: cancel it (POST /v1/jobs/{job.id}/cancel) and delete it once it "
                       "has stopped")
    starting = [other_id for other_id, spec in session.execute(
        select(Job.id, Job.spec).where(Job.tenant_id == job.tenant_id, Job.status.in_(UNFINISHED_STATUSES)))
        if str(spec.get("from_checkpoint") or "").split(":")[0] == job.id]
    if starting:
        raise JobInUse(f"unfinished job(s) {', '.join(starting)} start from this job's weights; delete it once "
                       "they have finished")
    store = get_store()
    store.check()  # StoreUnavailable before anything changes: the caller answers 503
    deleted = rowcount(session, delete(Job).where(Job.id == job.id, Job.status.in_(FINISHED_STATUSES)))
    session.commit()
    if deleted:
        try:
            store.delete_prefix(job_key(job.id))
        except StoreUnavailable as exc:  # it answered a moment ago; at worst the objects outlive the row
            log.warning("job %s deleted; its stored files stay behind: %s", job.id, exc)
