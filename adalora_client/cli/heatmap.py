"""`adalora jobs ranks`: the rank allocation drawn in the terminal.

The default view is the paper's picture: one row per layer, one column per module type, each cell the rank
kept at a snapshot, shaded from 0 (dark) to the initial rank (bright). `--timeline` draws every module's rank
across the snapshots instead, one coloured block per snapshot."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from adalora_client.cli.render import number
from adalora_client.types import ModulePlace, RankColumns

# Dark blue through green to yellow: readable on dark and light terminals, and in grey.
PALETTE = [(48, 18, 59), (50, 90, 170), (34, 150, 140), (90, 200, 90), (250, 230, 40)]


def shade(value: int | None, top: int) -> str:
    if value is None:
        return "on grey15"
    x = 0.0 if top <= 0 else min(max(value / top, 0.0), 1.0) * (len(PALETTE) - 1)
    i = min(int(x), len(PALETTE) - 2)
    f = x - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(PALETTE[i], PALETTE[i + 1]))
    return f"on rgb({r},{g},{b})"


def ink(value: int | None, top: int) -> str:
    """Black text on the bright half of the palette, white on the dark half."""
    return "black" if value is not None and top > 0 and value / top > 0.55 else "white"


def snapshot_index(columns: RankColumns, step: int | None) -> int:
    """The snapshot at `step`, or the last one before it; the latest when step is None."""
    if step is None:
        return len(columns.steps) - 1
    earlier = [i for i, s in enumerate(columns.steps) if s <= step]
    if not earlier:
        raise ValueError(f"no snapshot at or before step {step}; the first is at step {columns.steps[0]}")
    return earlier[-1]


def top_rank(columns: RankColumns) -> int:
    """The brightest shade: the largest rank of the first snapshot (the initial rank), at least 1."""
    return max((r or 0 for ranks in columns.ranks[:1] for r in ranks), default=0) or 1


def timeline_window(columns: RankColumns, width: int) -> list[int]:
    """The snapshots a timeline of `width` columns shows: the latest ones, one column each."""
    return list(range(len(columns.steps)))[-max(1, width - 30):]


def layer_grid(columns: RankColumns, index: int) -> Table:
    ranks, top = columns.ranks[index], top_rank(columns)
    types = list(dict.fromkeys(m.type for m in columns.modules))
    rows: dict[str, dict[str, int | None]] = {}
    for module, rank in zip(columns.modules, ranks):
        if module.layer is None:
            label = module.name
        else:
            label = f"{module.stack + ' ' if module.stack else ''}layer {module.layer}"
        rows.setdefault(label, {})[module.type] = rank
    grid = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 1))
    grid.add_column("", justify="right", style="bold")
    for kind in types:
        grid.add_column(kind, justify="center")
    for label, by_type in rows.items():
        cells = []
        for kind in types:
            if kind not in by_type:
                cells.append(Text(""))
                continue
            rank = by_type[kind]
            cells.append(Text(f" {'-' if rank is None else rank:>2} ", style=f"{ink(rank, top)} {shade(rank, top)}"))
        grid.add_row(label, *cells)
    return grid


def timeline(columns: RankColumns, width: int) -> Table:
    """Each module's rank at every snapshot (the latest ones when there are more than fit)."""
    top, keep = top_rank(columns), timeline_window(columns, width)
    grid = Table(box=None, show_header=False, padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right")
    for j, module in enumerate(columns.modules):
        blocks = Text()
        for i in keep:
            blocks.append(" ", style=shade(columns.ranks[i][j], top))
        grid.add_row(_place(module), blocks, str(columns.ranks[keep[-1]][j]))
    return grid


def _timeline_title(columns: RankColumns, width: int) -> str:
    top, keep = top_rank(columns), timeline_window(columns, width)
    return (f"ranks over {len(keep)} snapshots, steps {columns.steps[keep[0]]}–{columns.steps[keep[-1]]}, one "
            f"column each (dark 0 … bright {top}); the number is the latest rank")


def draw(console: Console, columns: RankColumns, *, step: int | None = None, over_time: bool = False) -> None:
    if not columns.steps:
        console.print("no rank snapshots yet: the first is written when training starts")
        return
    if over_time:
        console.print(_timeline_title(columns, console.width), soft_wrap=True)
        console.print(timeline(columns, console.width))
    else:
        index = snapshot_index(columns, step)
        console.print(_title(columns, index), soft_wrap=True)  # above the grid: a title would wrap at its width
        console.print(layer_grid(columns, index))


def _title(columns: RankColumns, index: int) -> str:
    params = columns.adapter_params[index]
    final = " · final pattern" if columns.final[index] else ""
    kept = f" · {params:,} adapter params" if params is not None else ""
    return (f"ranks at step {columns.steps[index]} · budget {number(columns.budgets[index])}{kept}{final} "
            f"(snapshot {index + 1} of {len(columns.steps)})")


def _place(module: ModulePlace) -> str:
    """`layer 3 value` (or `decoder layer 3 value`); the full name when it has no layer."""
    if module.layer is None:
        return module.name if len(module.name) <= 36 else "…" + module.name[-35:]
    stack = module.stack + " " if module.stack and module.stack != "encoder" else ""
    return f"{stack}layer {module.layer} {module.type}"
