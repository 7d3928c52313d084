"""A job spec from a YAML or JSON file, with flags for the common fields laid over it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from adalora_client.client import Client

TASKS = ("sequence_classification", "causal_lm", "seq2seq")


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec_file", nargs="?", type=Path, help="a job spec as YAML or JSON (the body of POST "
                        "/v1/jobs); the flags below override its fields")
    common = parser.add_argument_group("common fields")
    common.add_argument("--name")
    common.add_argument("--model", help="a hub id or a model the server lists (`adalora models list`)")
    common.add_argument("--task", choices=TASKS)
    data = common.add_mutually_exclusive_group()
    data.add_argument("--train-file", metavar="FILE_ID_OR_PATH",
                      help="an uploaded file's id, or a local file to upload first")
    data.add_argument("--server-data", metavar="PATH", help="a file in the server's DATA_DIRS")
    common.add_argument("--validation-file", metavar="FILE_ID_OR_PATH",
                        help="with --train-file: an uploaded file's id, or a local file to upload first")
    for column in ("text", "text-pair", "label", "prompt", "completion", "messages"):
        common.add_argument(f"--{column}-column", metavar="COLUMN")
    common.add_argument("--init-r", type=int, help="rank every module starts with")
    target = common.add_mutually_exclusive_group()
    target.add_argument("--target-r", type=float, help="average final rank per module")
    target.add_argument("--target-params", type=int, help="adapter parameters at the end")
    common.add_argument("--epochs", type=float)
    common.add_argument("--max-steps", type=int)
    common.add_argument("--batch-size", type=int)
    common.add_argument("--learning-rate", "--lr", type=_rate, help='a number, or "auto" (a range test picks it)')
    common.add_argument("--seed", type=int)
    common.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other field, dotted (schedule.tinit=0.2); the value is read as YAML. Repeatable")


class SpecProblem(ValueError):
    """A spec file or flag the CLI cannot use; the message says what to change."""


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecProblem(f"cannot read the spec file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecProblem(f"{path} is not UTF-8 text: write the spec as YAML or JSON") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecProblem(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecProblem(f"{path} must hold one mapping (the job spec's fields), not {type(spec).__name__}")
    return spec


def put(spec: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = spec
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecProblem(f"cannot set {dotted}: {part} is not a mapping in the spec")
        node = child
    node[leaf] = value


def file_id(client: Client, value: str) -> str:
    """An uploaded file's id as given, or the id of `value` uploaded now when it names a local file."""
    path = Path(value)
    if path.is_file():
        return client.files.create(path).id
    if value.startswith("file-"):
        return value
    raise SpecProblem(f"{value} is neither a local file nor an uploaded file's id (file-...)")


def build_spec(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    spec = read_spec_file(args.spec_file) if args.spec_file else {}
    for field in ("name", "model", "task"):
        if getattr(args, field) is not None:
            spec[field] = getattr(args, field)
    if args.validation_file and not args.train_file:
        raise SpecProblem("--validation-file goes with --train-file")
    if args.train_file:
        spec["dataset"] = {**_kept_columns(spec), "source": "file", "file_id": file_id(client, args.train_file)}
        if args.validation_file:
            spec["dataset"]["validation_file_id"] = file_id(client, args.validation_file)
    elif args.server_data:
        spec["dataset"] = {**_kept_columns(spec), "source": "server", "path": args.server_data}
    for column in ("text", "text_pair", "label", "prompt", "completion", "messages"):
        if (value := getattr(args, f"{column}_column")) is not None:
            put(spec, f"dataset.{column}_column", value)
    for flag, dotted in (("init_r", "budget.init_r"), ("target_r", "budget.target_r"),
                         ("target_params", "budget.target_params"), ("epochs", "training.epochs"),
                         ("max_steps", "training.max_steps"), ("batch_size", "training.batch_size"),
                         ("learning_rate", "training.learning_rate"), ("seed", "training.seed")):
        if (value := getattr(args, flag)) is not None:
            put(spec, dotted, value)
    if args.target_r is not None:
        spec["budget"].pop("target_params", None)  # the flag replaces the file's target, never adds a second
    if args.target_params is not None:
        spec["budget"].pop("target_r", None)
    for assignment in args.set:
        dotted, sep, raw = assignment.partition("=")
        if not sep or not dotted.strip():
            raise SpecProblem(f"--set {assignment!r}: write FIELD=VALUE, e.g. --set schedule.tinit=0.2")
        put(spec, dotted.strip(), yaml.safe_load(raw) if raw.strip() else None)
    missing = [f for f in ("model", "task", "dataset") if f not in spec]
    if missing:
        raise SpecProblem(f"the spec has no {', '.join(missing)}: give a spec file or the flags "
                          f"{', '.join('--' + f for f in missing if f != 'dataset')}"
                          f"{' --train-file or --server-data' if 'dataset' in missing else ''}".replace(" ,", ","))
    return spec


def _kept_columns(spec: dict[str, Any]) -> dict[str, Any]:
    """A new data source keeps the spec file's column choices and validation settings, not its old source."""
    old = spec.get("dataset") if isinstance(spec.get("dataset"), dict) else {}
    return {k: v for k, v in old.items() if k.endswith("_column") or k in ("label_type", "validation_split")}


def _rate(text: str) -> float | str:
    return "auto" if text.strip().lower() == "auto" else float(text)
