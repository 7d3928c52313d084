"""`adalora`: the users' command line (the admin one is `adalora-svc`).

    adalora files upload train.jsonl
    adalora jobs create spec.yaml --follow
    adalora jobs ranks JOB_ID
    adalora download JOB_ID adapter -o ./my-adapter

Every command takes --json for scripts. Exit codes: 0 done (a followed job succeeded), 1 an error or a failed
job, 2 a usage problem, 3 a followed job was cancelled, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from adalora_client.cli import follow as following
from adalora_client.cli import heatmap, render
from adalora_client.cli.render import console, errors, fields, number, table, when
from adalora_client.cli.spec import SpecProblem, add_spec_flags, build_spec
from adalora_client.client import DOWNLOADS, Client
from adalora_client.errors import AdaloraError, APIError
from adalora_client.types import FINISHED

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")


def show(args: argparse.Namespace, value, human: Callable[[], None]) -> None:
    if args.json:
        render.print_json(value)
    else:
        human()


# -- files -------------------------------------------------------------------------------------------

def files_upload(client: Client, args) -> int:
    file = client.files.create(args.path, purpose=args.purpose)
    show(args, file, lambda: console.print(f"uploaded [bold]{file.id}[/] · {file.filename} · {file.row_count:,} "
                                           f"rows · columns {', '.join(c.name for c in file.columns)}"))
    return 0


def files_list(client: Client, args) -> int:
    page = client.files.list(limit=args.limit, offset=args.offset)
    show(args, page, lambda: table(("id", "filename", "format", "rows", "bytes", "created"),
                                   [(f.id, f.filename, f.format, f"{f.row_count:,}", f"{f.size:,}",
                                     when(f.created_at, short=True))
                                    for f in page.data], title=f"{page.count} file(s)"))
    return 0


def files_get(client: Client, args) -> int:
    file = client.files.retrieve(args.file_id)

    def human() -> None:
        fields([("id", file.id), ("filename", file.filename), ("purpose", file.purpose), ("format", file.format),
                ("rows", f"{file.row_count:,}"), ("bytes", f"{file.size:,}"), ("sha256", file.sha256),
                ("created", when(file.created_at))])
        table(("column", "type", "nulls", "distinct", "values"),
              [(c.name, c.type, c.nulls, c.distinct, ", ".join(c.values or [])[:60]) for c in file.columns])
    show(args, file, human)
    return 0


def files_delete(client: Client, args) -> int:
    client.files.delete(args.file_id)
    show(args, {"id": args.file_id, "deleted": True}, lambda: console.print(f"deleted {args.file_id}"))
    return 0


# -- jobs --------------------------------------------------------------------------------------------

def jobs_create(client: Client, args) -> int:
    spec = build_spec(args, client)
    if args.dry_run:
        plan = client.jobs.dry_run(spec, gpu=args.gpu)
        show(args, plan, lambda: fields([
            ("model", plan.model), ("adapted modules", plan.adapted_modules),
            ("adapter params", f"{plan.adapter_params_init:,} at the start → {plan.adapter_params_final:,} at the end"),
            ("trainable params", f"{plan.trainable_params_init:,} → {plan.trainable_params_final:,} "
                                 f"(task head {plan.head_params:,})"),
            ("budget", f"{number(plan.budget_init)} → {number(plan.budget_final)} {plan.budget_unit} "
                       f"(average final rank {plan.target_r:.2f})"),
            ("steps", f"{plan.total_steps:,} (pruning from step {plan.tinit} to {plan.total_steps - plan.tfinal})"),
            ("scale", f"{plan.scale:.3g}" if plan.scale is not None else None),
            *memory_lines(plan),
            *(("warning", text) for text in plan.warnings),
            ("queued", "no: a dry run only plans")]))
        return 0
    if args.gpu:
        raise SpecProblem("--gpu checks a dry run against a card: add --dry-run")
    job = client.jobs.create(spec)
    if args.follow:
        return follow_job(client, job.id, args)
    show(args, job, lambda: console.print(f"created [bold]{job.id}[/] ({job.status}); follow it with "
                                          f"`adalora jobs follow {job.id}`"))
    return 0


def memory_lines(plan) -> list[tuple[str, str]]:
    """The dry run's memory estimate: the peak, its largest parts, and the verdict for the card asked."""
    memory = plan.memory
    if memory is None:
        return [("peak memory", plan.memory_problem or "not estimated")]
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    on = memory.peak_checkpointing_on_bytes
    trained = memory.trainable_bytes + memory.gradients_bytes + memory.optimizer_bytes + memory.allocator_bytes
    lines = [("peak memory", f"{gib(memory.peak_bytes)} at batch {memory.batch_size} x {memory.seq_len} tokens, "
                             f"{memory.dtype} base, checkpointing {'on' if memory.gradient_checkpointing else 'off'} "
                             f"(off {gib(memory.peak_checkpointing_off_bytes)}"
                             + (f", on {gib(on)})" if on is not None else ", not supported)")),
             ("  of which", f"weights {gib(memory.weights_bytes)}, activations {gib(memory.activations_bytes)}, "
                            f"adapters with gradients and optimizer state {gib(trained)}")]
    lines += [("  note", note) for note in memory.notes]
    if memory.card is not None:
        lines.append((memory.card.name, "fits" if memory.fits else "does not fit"))
        lines += [("  try", advice) for advice in memory.advice]
    return lines


def follow_job(client: Client, job_id: str, args) -> int:
    if args.json:  # scripts: wait quietly, then the final state
        job = client.jobs.wait(job_id, poll_seconds=1.0)
        render.print_json(job)
        return {"succeeded": 0, "cancelled": following.EXIT_CANCELLED}.get(job.status, following.EXIT_FAILED)
    return following.follow(client, job_id, console)


def jobs_follow(client: Client, args) -> int:
    return follow_job(client, args.job_id, args)


def jobs_list(client: Client, args) -> int:
    page = client.jobs.list(status=args.status, limit=args.limit, offset=args.offset)
    show(args, page, lambda: table(
        ("id", "status", "step", "model", "name", "created"),
        [(j.id, j.status, f"{j.step}/{j.total_steps or '?'}", j.model, j.name, when(j.created_at, short=True))
         for j in page.data], title=f"{page.count} job(s)"))
    return 0


def learning_rate(job) -> str | None:
    if job.lr_probe:
        probe = job.lr_probe
        return (f"{probe['learning_rate']:.3g} (auto: a {probe['steps']}-step range test, lowest loss at "
                f"{probe['lowest_at']:.3g})")
    given = job.spec.get("training", {}).get("learning_rate")
    return "auto (probed when the run starts)" if given == "auto" else (None if given is None else f"{given:g}")


def trained_tokens(job) -> str | None:
    """`12,345 (2,100 tokens/s at step 40)`: the count, and the throughput of the latest step that reported one."""
    if job.trained_tokens is None:
        return None
    latest = job.latest_metrics
    rate = latest.values.get("tokens_per_s") if latest else None
    return f"{job.trained_tokens:,}" + (f" ({rate:,.0f} tokens/s at step {latest.step})" if rate is not None else "")


def jobs_get(client: Client, args) -> int:
    job = client.jobs.retrieve(args.job_id)

    def human() -> None:
        latest = job.latest_metrics
        fields([("id", job.id), ("name", job.name), ("status", job.status), ("model", job.model),
                ("task", job.task), ("step", f"{job.step}/{job.total_steps or '?'}"),
                ("budget", f"{number(job.current_budget)} → {number(job.budget_target)} {job.budget_unit or ''}"),
                ("adapter params", number(job.adapter_params)),
                ("trained tokens", trained_tokens(job)),
                ("learning rate", learning_rate(job)),
                ("latest metrics", ", ".join(f"{k} {v:.4g}" for k, v in latest.values.items()) if latest else None),
                ("created", when(job.created_at)), ("started", when(job.started_at)),
                ("finished", when(job.finished_at)), ("attempts", job.attempts), ("error", job.error)])
    show(args, job, human)
    return 0


def jobs_cancel(client: Client, args) -> int:
    status = client.jobs.cancel(args.job_id)
    show(args, {"id": args.job_id, "status": status}, lambda: console.print(f"{args.job_id}: {status}"))
    return 0


def jobs_delete(client: Client, args) -> int:
    client.jobs.delete(args.job_id)
    show(args, {"id": args.job_id, "deleted": True}, lambda: console.print(f"{args.job_id}: deleted"))
    return 0


def jobs_events(client: Client, args) -> int:
    events = client.jobs.stream_events(args.job_id) if args.follow else client.jobs.iter_events(args.job_id)
    for event in events:
        if args.json:
            print(event.model_dump_json(), flush=True)  # one JSON object per line, as they come
        else:
            following.print_event(console, event)
    return 0


def jobs_metrics(client: Client, args) -> int:
    rows = list(client.jobs.iter_metrics(args.job_id))
    if args.last:
        rows = rows[-args.last:]
    names = sorted({k for m in rows for k in m.values}, key=lambda k: (k.startswith("eval_"), k))
    show(args, rows, lambda: table(("step", *names), [(m.step, *(number(m.values.get(k)) if k in m.values else ""
                                                                for k in names)) for m in rows]))
    return 0


def jobs_ranks(client: Client, args) -> int:
    columns = client.jobs.rank_columns(args.job_id)
    if args.json:
        render.print_json(columns)
        return 0
    try:
        heatmap.draw(console, columns, step=args.step, over_time=args.timeline)
    except ValueError as exc:
        raise SpecProblem(str(exc)) from None
    return 0


def jobs_checkpoints(client: Client, args) -> int:
    checkpoints = client.jobs.checkpoints(args.job_id)
    show(args, checkpoints, lambda: table(("step", "created"), [(c.step, when(c.created_at)) for c in checkpoints]))
    return 0


# -- downloads and models ------------------------------------------------------------------------------

def download(client: Client, args) -> int:
    job = client.jobs.retrieve(args.job_id)
    if job.status not in FINISHED:
        raise SpecProblem(f"job {job.id} is {job.status}; download once it has succeeded "
                          f"(`adalora jobs follow {job.id}` waits for it)")
    out = args.output or Path(f"{job.id}-{args.kind}" + ("" if not args.no_unpack else ".tar"))
    with console.status(f"downloading the {args.kind} of {job.id} ..."):
        result = client.jobs.download(job.id, args.kind, out, unpack=not args.no_unpack)
    show(args, result, lambda: console.print(
        f"{args.kind} of {job.id}: {result.size:,} bytes, sha256 {result.sha256[:16]}… verified → "
        f"{result.unpacked or result.archive}"))
    return 0


def models_list(client: Client, args) -> int:
    models = client.models.list()
    show(args, models, lambda: table(("name", "family", "parameters", "tasks"),
                                     [(m.name, m.family, f"{m.parameters:,}", ", ".join(m.tasks)) for m in models]))
    return 0


# -- the parser --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    parser = argparse.ArgumentParser(prog="adalora", description="Fine-tune with AdaLoRA on an adalora service.",
                                     parents=[output])
    parser.add_argument("--api-url", help="the service's address (default $ADALORA_API_URL, else "
                                          "http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="default $ADALORA_API_KEY")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{files,jobs,download,models}")

    def command(subparsers, name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=help_text, description=help_text, parents=[output])
        sub.set_defaults(handler=handler)
        return sub

    files = groups.add_parser("files", help="upload and manage dataset files").add_subparsers(
        dest="command", required=True)
    upload = command(files, "upload", files_upload, "upload a dataset (JSON Lines, JSON, CSV, TSV or Parquet)")
    upload.add_argument("path", type=Path)
    upload.add_argument("--purpose", default="fine-tune")
    listing = command(files, "list", files_list, "list your files")
    for sub in (listing,):
        sub.add_argument("--limit", type=int, default=50)
        sub.add_argument("--offset", type=int, default=0)
    command(files, "get", files_get, "a file's columns and details").add_argument("file_id")
    command(files, "delete", files_delete, "delete a file").add_argument("file_id")

    jobs = groups.add_parser("jobs", help="create, watch and manage fine-tuning jobs").add_subparsers(
        dest="command", required=True)
    create = command(jobs, "create", jobs_create, "create a job from a spec file and/or flags")
    add_spec_flags(create)
    create.add_argument("--dry-run", action="store_true", help="only show the plan; nothing is queued")
    create.add_argument("--gpu", help="with --dry-run: check the memory estimate against a card (A100-40GB, L4, "
                                      "24GB, ...)")
    create.add_argument("--follow", action="store_true", help="then follow it to the end (as `jobs follow`)")
    job_list = command(jobs, "list", jobs_list, "list your jobs, newest first")
    job_list.add_argument("--status", choices=JOB_STATUSES)
    job_list.add_argument("--limit", type=int, default=50)
    job_list.add_argument("--offset", type=int, default=0)
    for name, handler, help_text in (("get", jobs_get, "a job's status, progress and latest metrics"),
                                     ("cancel", jobs_cancel, "stop a job"),
                                     ("delete", jobs_delete, "delete a finished job and everything it left"),
                                     ("follow", jobs_follow, "a live progress bar until the job ends; exits "
                                                             "1 if it failed, 3 if it was cancelled"),
                                     ("checkpoints", jobs_checkpoints, "the job's saved checkpoints")):
        command(jobs, name, handler, help_text).add_argument("job_id")
    events = command(jobs, "events", jobs_events, "the job's event log")
    events.add_argument("job_id")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events until the job ends")
    metrics = command(jobs, "metrics", jobs_metrics, "the job's training and eval metrics per step")
    metrics.add_argument("job_id")
    metrics.add_argument("--last", type=int, metavar="N", help="only the last N rows")
    ranks = command(jobs, "ranks", jobs_ranks, "the rank allocation as a heatmap (layers × module types)")
    ranks.add_argument("job_id")
    ranks.add_argument("--step", type=int, help="the snapshot at (or before) this step; default the latest")
    ranks.add_argument("--timeline", action="store_true", help="every module's rank across all snapshots")

    get = command(groups, "download", download, "download a finished job's adapter or merged model: resumes a "
                                                "broken download, checks the sha256, unpacks")
    get.add_argument("job_id")
    get.add_argument("kind", choices=DOWNLOADS, help="adapter (PEFT AdaLoRA), merged, lora (plain LoRA, per-module "
                     "ranks) or lora-serving (one padded rank: vLLM, TGI, LoRAX)")
    get.add_argument("-o", "--output", type=Path, help="a new or empty folder for the files (default "
                                                       "./JOB-KIND); with --no-unpack, the .tar's path")
    get.add_argument("--no-unpack", action="store_true", help="keep the verified .tar as it is")

    models = groups.add_parser("models", help="models the server offers").add_subparsers(dest="command",
                                                                                       required=True)
    command(models, "list", models_list, "models in the server's MODEL_DIRS")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        with Client(args.api_url, args.api_key) as client:
            return args.handler(client, args)
    except SpecProblem as exc:
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return EXIT_USAGE
    except APIError as exc:
        errors.print(f"[red]error:[/] {exc.status_code} {exc.detail if not exc.field_errors else ''}".rstrip(),
                     soft_wrap=True)
        for field, message in exc.field_errors:
            errors.print(f"  {field}: {message}", soft_wrap=True, markup=False)
        return 1
    except (AdaloraError, FileExistsError, OSError) as exc:
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        job_id = getattr(args, "job_id", None)
        errors.print("interrupted" + (f"; the job goes on (`adalora jobs cancel {job_id}` stops it)" if job_id else ""))
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
