"""Downloads of a finished job, each one tar file: the PEFT AdaLoRA adapter (`adapter`), the merged model
(`merged`), and the adapter as plain LoRA for serving engines (`lora`: per-module ranks in rank_pattern and
alpha_pattern; `lora-serving`: one zero-padded rank, the scale folded into lora_B).

Served from the artifact store (api/downloads.py) with its sha256 (also the ETag) and HTTP Range support,
so `curl -C -` or any resuming client can continue a broken download.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.downloads import stored_download
from api.errors import JOB_RESPONSES, error_response
from api.routes import V1
from service.tables import FINISHED_STATUSES, Artifact

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/artifacts", tags=["artifacts"], responses=JOB_RESPONSES)

ArtifactKind = Literal["adapter", "merged", "lora", "lora-serving"]


@router.head("/{kind}", response_class=Response, include_in_schema=False)  # size and checksum, no body
@router.get("/{kind}", response_class=Response, responses={
    200: {"content": {"application/x-tar": {}}, "description": "the whole archive"},
    206: {"description": "the requested byte range"},
    400: {"description": "a malformed Range header"},
    404: error_response("no such job, or this artifact was not produced"),
    409: error_response("the job has not finished yet"),
    416: {"description": "the range starts beyond the end of the file"},
    307: {"description": "with DOWNLOAD_REDIRECT_SECONDS set: a presigned URL of the S3 store to fetch from"},
})
async def download_artifact(kind: ArtifactKind, job: JobDep, session: SessionDep, request: Request) -> Response:
    if job.status not in FINISHED_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job is {job.status}; the {kind} is available once it has succeeded")
    artifact = await session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == kind))
    if artifact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job.status} and left no {kind} archive")
    await session.close()  # the connection goes back to the pool now, not after a download of minutes
    return await stored_download(request, artifact.path, sha256=artifact.sha256, filename=f"{job.id}-{kind}.tar",
                                 media_type="application/x-tar", what=f"{kind} archive")
