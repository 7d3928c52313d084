"""`adalora jobs follow`: a live progress bar (step/total, ETA, loss, latest eval, budget) with the job's events
printed above it, ending with the result. On a terminal the bar redraws in place; in a log (not a terminal)
one line is printed per tenth of the run and per evaluation instead."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from adalora_client.cli.render import duration, number
from adalora_client.client import Client
from adalora_client.types import Event, Job

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3
LEVEL_STYLES = {"error": "red", "warning": "yellow"}


class LatestMetrics:
    """The newest training loss and the newest evaluation, read incrementally (an eval is on few steps)."""

    def __init__(self) -> None:
        self.after_step, self.loss, self.evals = -1, None, {}
        self.start_evals: dict[str, float] = {}  # step 0: before training

    def update(self, client: Client, job_id: str) -> None:
        for metric in client.jobs.iter_metrics(job_id, after_step=self.after_step):
            self.after_step = metric.step
            self.loss = metric.values.get("loss", self.loss)
            evals = {k: v for k, v in metric.values.items() if k.startswith("eval_")}
            if metric.step == 0:
                self.start_evals = evals
            self.evals = evals or self.evals


def status_line(job: Job, latest: LatestMetrics) -> str:
    """loss, the latest evaluation (two scores at most) and the budget, short enough for one terminal line."""
    parts = []
    if latest.loss is not None:
        parts.append(f"loss {latest.loss:.4f}")
    scores = {k.removeprefix("eval_"): v for k, v in sorted(latest.evals.items()) if k != "eval_runtime"}
    shown = [k for k in scores if k != "loss"][:2] or [k for k in scores][:1]
    if shown:
        parts.append("eval " + " ".join(f"{k} {scores[k]:.4g}{_change(latest, k, scores[k])}" for k in shown))
    if job.current_budget is not None:
        unit = job.budget_unit or ""
        target = job.budget_target
        heading = f" → {number(target)}" if target is not None and target != job.current_budget else ""
        parts.append(f"budget {number(job.current_budget)}{heading} {unit}".rstrip())
    return " · ".join(parts)


def _change(latest: LatestMetrics, name: str, value: float) -> str:
    """` (+0.12 from step 0)` once the job has evaluated since the start."""
    start = latest.start_evals.get(f"eval_{name}")
    if start is None or latest.after_step <= 0:
        return ""
    return f" ({value - start:+.4g} from step 0)"


def print_event(console: Console, event: Event) -> None:
    style = LEVEL_STYLES.get(event.level)
    stamp = event.ts.astimezone().strftime("%H:%M:%S")
    console.print(f"[dim]{stamp}[/] " + (f"[{style}]{event.message}[/]" if style else event.message),
                  highlight=False, markup=True, soft_wrap=True)


def follow(client: Client, job_id: str, console: Console, *, poll_seconds: float = 1.0) -> int:
    """Shows the job until it finishes; returns the exit code for its outcome."""
    job = client.jobs.retrieve(job_id)
    console.print(f"Following [bold]{job.id}[/] ({job.model}, {job.task}); Ctrl+C stops following, not the job.")
    after_id, latest = 0, LatestMetrics()
    live = console.is_terminal
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(compact=True), TextColumn("{task.fields[status]}"),
                        console=console, transient=False, disable=not live)
    last_logged: tuple[int, str] | None = None
    with progress:
        bar = progress.add_task(job.status, total=job.total_steps, completed=job.step, status="")
        while True:
            for event in client.jobs.iter_events(job_id, after_id=after_id):
                print_event(progress.console, event)
                after_id = event.id
            latest.update(client, job_id)
            line = status_line(job, latest)
            progress.update(bar, description=job.status, total=job.total_steps, completed=job.step, status=line)
            if not live:
                last_logged = _log_line(console, job, line, last_logged)
            if job.finished:
                break
            time.sleep(poll_seconds)
            job = client.jobs.retrieve(job_id)
    return _result(console, job, status_line(job, latest))


def _log_line(console: Console, job: Job, line: str, last: tuple[int, str] | None) -> tuple[int, str] | None:
    """Without a terminal: a line when the run has gone another tenth, or an evaluation came in."""
    if not job.total_steps or job.status not in ("running", "cancelling") or job.step == 0:
        return last
    tenth = max(1, job.total_steps // 10)
    evals = " ".join(p for p in line.split(" · ") if p.startswith("eval "))
    if last is None or job.step - last[0] >= tenth or evals != last[1] or job.step == job.total_steps:
        eta = f" · {duration(job.eta_seconds)} left" if job.eta_seconds is not None else ""
        console.print(f"step {job.step}/{job.total_steps}{eta} · {line}", highlight=False, soft_wrap=True)
        return job.step, evals
    return last


def _result(console: Console, job: Job, line: str) -> int:
    took = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    summary = f"step {job.step}/{job.total_steps or '?'}" + (f" · {line}" if line else "")
    if job.adapter_params is not None:
        summary += f" · adapter {job.adapter_params:,} params"
    if job.status == "succeeded":
        console.print(f"[green]✔ succeeded[/] in {duration(took)} · {summary}")
        console.print(f"  download: adalora download {job.id} adapter -o ./{job.id}-adapter")
        return EXIT_SUCCEEDED
    if job.status == "cancelled":
        console.print(f"[yellow]■ cancelled[/] · {summary}")
        return EXIT_CANCELLED
    console.print(f"[red]✘ {job.status}[/] · {summary}")
    if job.error:
        console.print(f"  [red]{job.error}[/]", soft_wrap=True)
    return EXIT_FAILED
