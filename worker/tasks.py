"""The one task: a job id in, the run recorded on the job row. It never raises for a failed run, so the
message is acknowledged; the job row, not a result backend, says how it ended."""

from __future__ import annotations

from service.queue import RUN_JOB_TASK
from worker.celery_app import app
from worker.runner import run_job as run_job_row


@app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self, job_id: str) -> str | None:
    return run_job_row(job_id, worker=self.request.hostname or "worker", task_id=self.request.id)
