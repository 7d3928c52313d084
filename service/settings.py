"""Service settings from the environment (or a .env file), read once.

With no configuration everything is embedded under ./var: a SQLite database, a broker on a SQLite
file (kombu's SQLAlchemy transport, so no server is needed) and a local artifact folder.
Set DATABASE_URL and REDIS_URL to run on Postgres + Redis.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str = f"sqlite:///{VAR_DIR / 'adalora.sqlite'}"
    # An explicit broker wins; otherwise REDIS_URL; otherwise the serverless SQLite broker.
    broker_url: str | None = None
    redis_url: str | None = None
    queue_name: str = "training"             # workers of one GPU pool share a queue
    artifact_dir: Path = VAR_DIR / "artifacts"    # the store itself, or with ARTIFACT_STORE this host's scratch
    artifact_store: str = ""                 # empty: ARTIFACT_DIR; s3://bucket/prefix: an S3-compatible store
    download_redirect_seconds: int = Field(0, ge=0, le=7 * 24 * 3600)  # >0: downloads redirect to a presigned
                                             # S3 URL valid this long, so the bytes skip the API (0: streamed)
    tensorboard_dir: Path = VAR_DIR / "tensorboard"  # a job's TensorBoard event files: <this>/<job id>
    # Server folders that hold models / datasets a job may name; nothing outside them is readable.
    # From the environment: a comma-separated list (MODEL_DIRS=/models,/mnt/shared/models).
    model_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    data_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    database_pool_size: int = 10             # connections each API process keeps to the database; more
                                             # concurrent requests wait their turn (asynchronously)

    # Limits.
    max_body_bytes: int = 1 << 20            # a JSON request body
    max_upload_bytes: int = 2 << 30          # an uploaded dataset file
    max_line_bytes: int = 8 << 20            # one line (JSONL/CSV/TSV) or one item of a JSON array in an upload
    max_header_bytes: int = Field(32 << 10, ge=1024)  # a request's line and headers (adalora-svc serve): 431 past it
    max_headers: int = Field(100, ge=8)      # ... and its header fields, as gunicorn's limit_request_fields
    max_steps_cap: int = 200_000             # no job may ask for more optimizer steps
    jobs_per_minute: int = 30                # new jobs per tenant in any 60 s window (0: unlimited)
    metrics_flush_steps: int = 20            # the worker writes buffered metrics every N steps ...
    metrics_flush_seconds: float = 5.0       # ... or every T seconds, whichever comes first
    progress_event_steps: int = 100          # a "step 120/400: loss ..." job event every N steps ...
    progress_event_seconds: float = 60.0     # ... or every T seconds of training, whichever comes first
    cancel_poll_seconds: float = 1.0         # how often a running job re-reads its status
    heartbeat_seconds: float = 30.0          # a running job's worker stamps the row this often, even mid-step
    stale_job_seconds: float = 180.0         # a running job without a heartbeat this long is taken over
    database_outage_limit_seconds: float = 3600.0  # a run trains on through a database outage this long, then fails
    store_outage_limit_seconds: float = 3600.0  # a finished run retries storing its results this long, then fails
    scratch_max_bytes: int = Field(20 << 30, ge=0)  # a worker host's fetched copies and tokenised-data cache under
                                             # ARTIFACT_DIR beyond this are evicted, least recently used first
    max_attempts: int = 3                    # a job whose worker stopped responding this many times fails
    queued_grace_seconds: float = 300.0      # a job queued this long without a claim is sent to the broker again
    reconcile_seconds: float = 60.0          # each worker process runs the reconciler this often (0: never)
    idempotency_ttl_hours: float = 24.0      # an Idempotency-Key's answer is replayed this long, then deleted
                                             # by the reconciler and the key is free again (0: kept forever)
    checkpoint_every: int = 1000             # steps between resumable checkpoints (0: none); a taken-over
                                             # job resumes from its latest one
    checkpoint_minutes: float = 30.0         # ... or minutes, whichever comes first (0: no timed ones)
    task_soft_time_limit: int = 24 * 3600    # a training run longer than this is stopped
    task_time_limit: int = 24 * 3600 + 600   # ... and killed if it ignores the soft limit

    @field_validator("model_dirs", "data_dirs", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("artifact_store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value.strip():
            parse_store_url(value)
        return value.strip()

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        if self.env == "production" and self.database_url.startswith("sqlite"):
            raise ValueError("ENV=production needs DATABASE_URL pointing at Postgres, not the embedded SQLite file")
        return self

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite'}"

    def resolved_model_dirs(self) -> list[Path]:
        return [d.expanduser().resolve() for d in self.model_dirs]

    def resolved_data_dirs(self) -> list[Path]:
        return [d.expanduser().resolve() for d in self.data_dirs]


STORE_URL = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/((?:[\w.\-]+/?)*))?")


def parse_store_url(url: str) -> tuple[str, str]:
    """ARTIFACT_STORE's `s3://bucket/some/prefix` as ("bucket", "some/prefix/")."""
    match = STORE_URL.fullmatch(url.strip())
    prefix = (match.group(2) or "").strip("/") if match else ""
    if not match or any(part in (".", "..") for part in prefix.split("/")):
        raise ValueError("ARTIFACT_STORE must be empty (the ARTIFACT_DIR folder) or s3://<bucket>[/<prefix>], "
                         f"got {url!r}")
    return match.group(1), f"{prefix}/" if prefix else ""


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests change the environment and call get_settings.cache_clear()."""
    return Settings()
