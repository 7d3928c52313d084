"""Python SDK and `adalora` CLI for the AdaLoRA fine-tuning service."""

from adalora_client.client import Client, Page
from adalora_client.errors import (
    AdaloraError,
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ChecksumMismatch,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    ValidationError,
)
from adalora_client.types import Checkpoint, Download, DryRun, Event, File, Job, Metric, Model, RankColumns, Ranks

__all__ = [
    "AdaloraError", "APIConnectionError", "APIError", "AuthenticationError", "BadRequestError", "Checkpoint",
    "ChecksumMismatch", "Client", "ConflictError", "Download", "DryRun", "Event", "File", "Job", "Metric", "Model",
    "NotFoundError", "Page", "PayloadTooLargeError", "RankColumns", "Ranks", "RateLimitError",
    "ServiceUnavailableError", "ValidationError",
]
