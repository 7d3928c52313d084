"""Moved to service.dataset.columns (torch-free, shared with the API); kept for bench/quality_lm.py's import."""

from service.dataset.columns import ColumnMap

__all__ = ["ColumnMap"]
