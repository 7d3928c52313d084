"""The job creation limit: at most JOBS_PER_MINUTE new jobs per tenant in any sliding 60-second window.

The window is counted in the jobs table itself ((tenant_id, created_at) is indexed), so every API process
sees the same count with no extra store and nothing to expire; an in-process counter would let N API
replicas accept N times the limit. The limit is per tenant, i.e. all of its keys together, so minting
more keys does not raise it. Two requests that race may both pass at the last free slot: the limit is a
brake on runaway clients, not an exact quota, and one extra job is an acceptable price for no lock.
"""

from __future__ import annotations

import math
from datetime import timedelta

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.tables import Job, utcnow

WINDOW = timedelta(seconds=60)


def check_job_rate(session: Session, tenant_id: int, per_minute: int) -> None:
    """Raises 429 with Retry-After if the tenant already created `per_minute` jobs in the last minute."""
    if per_minute <= 0:
        return  # JOBS_PER_MINUTE=0: no limit
    now = utcnow()
    newest = session.scalars(select(Job.created_at).where(Job.tenant_id == tenant_id, Job.created_at > now - WINDOW)
                             .order_by(Job.created_at.desc()).limit(per_minute)).all()
    if len(newest) < per_minute:
        return
    # A slot frees when the per_minute-th newest job leaves the window.
    retry_after = max(1, math.ceil((newest[-1] + WINDOW - now).total_seconds()))
    raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(retry_after)},
                        detail=f"job creation is limited to {per_minute} per minute (JOBS_PER_MINUTE); "
                               f"retry in {retry_after} s")
