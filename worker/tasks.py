"""The one task: a job id in, the run recorded on the job row. It never raises for a failed run, so the
message is acknowledged; the job row, not a result backend, says how it ended."""

from __future__ import annotations

from service.queue import RUN_JOB_TASK
from service.settings import get_settings
from worker.celery_app import app
from worker.runner import JobBusy, claim_and_run


@app.task(name=RUN_JOB_TASK, bind=True, max_retries=None)
def run_job(self, job_id: str) -> str | None:
    try:
        return claim_and_run(job_id, worker=self.request.hostname or "worker", task_id=self.request.id)
    except JobBusy:
        # Redelivered while the job looks alive elsewhere (e.g. its pool process was just killed): come back
        # when a dead run's heartbeat is stale; a live run will have finished or still be beating by then.
        raise self.retry(countdown=get_settings().stale_job_seconds) from None
