"""How the CLI prints things: JSON for scripts (--json), rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def as_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return value


def print_json(value: Any) -> None:
    # Plain print: rich would wrap long lines, and scripts parse this.
    print(json.dumps(as_json(value), indent=2, ensure_ascii=False))


def when(value: datetime | None, short: bool = False) -> str:
    return value.astimezone().strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S") if value else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """The first column (an id) is never wrapped or cut: people copy it into the next command."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    out = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, name in enumerate(columns):
        widest = max((len(row[i]) for row in cells), default=0)
        if i == 0:
            out.add_column(name, no_wrap=True, min_width=max(widest, len(name)))
        else:  # short values stay whole; long ones (a model's hub id) fold onto more lines
            out.add_column(name, overflow="fold", min_width=min(max(widest, len(name)), 10))
    for row in cells:
        out.add_row(*row)
    console.print(out)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A key: value block (one object)."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        console.print(f"[bold]{key.ljust(width)}[/]  {'-' if value is None else value}")
