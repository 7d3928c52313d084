"""A dry run: what a spec would train, computed on the model's architecture (meta tensors, no weights read).

Imported lazily by the jobs router: it pulls in torch and transformers, which the API does not load otherwise.
"""

from __future__ import annotations

from transformers import AutoTokenizer

from adalora_core import AdaLoraConfig, ConfigError, TrainArgs, build_model, plan_run
from api.errors import SpecError
from api.memory_plan import plan_memory
from api.schemas import DryRunPublic, MemoryPublic
from service.dataset import DataError
from service.dataset.columns import map_columns, texts_of
from service.dataset.packing import pack_texts, require_vocabulary
from service.dataset.readers import count_training_rows, n_rows, read_splits
from service.gpu_cards import Card
from service.jobspec import HubDataset, JobSpec
from service.model_problems import load_problem
from service.redaction import first_line, hide_server_paths


def plan_job(spec: JobSpec, card: Card | None = None) -> DryRunPublic:
    total_steps, basis = _total_steps(spec)
    try:
        config = AdaLoraConfig(**spec.to_adalora_kwargs())
    except ConfigError as exc:
        raise SpecError("budget", str(exc)) from exc
    try:
        model = build_model(spec.model_source(), spec.task, empty=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError("model", load_problem(spec.model, exc)) from exc
    try:
        plan = plan_run(model, config, total_step=total_steps)
    except ConfigError as exc:
        raise SpecError(_field_of(str(exc)), str(exc)) from exc
    total_steps = plan.pop("total_step")
    memory, problem = _memory(spec, total_steps, card)
    warnings = [w for w in (config.scale_warning(),) if w]
    return DryRunPublic(model=spec.model, total_steps=total_steps, total_steps_from=basis, memory=memory,
                        memory_problem=problem, scale=config.scale, warnings=warnings, **plan)


def _memory(spec: JobSpec, total_steps: int, card: Card | None) -> tuple[MemoryPublic | None, str | None]:
    """The estimate, or why there is none: the plan above stands without it."""
    try:
        return plan_memory(spec, total_steps, card), None
    except Exception as exc:  # an architecture whose forward pass does not run on meta tensors
        return None, ("the peak memory could not be estimated: the model's forward pass did not run on shapes "
                      f"alone ({hide_server_paths(first_line(exc))})")


def _total_steps(spec: JobSpec) -> tuple[int, str]:
    """The run length, and how it was found: it is fixed by max_steps, otherwise by the number of examples."""
    if spec.training.max_steps is not None:
        return spec.training.max_steps, "training.max_steps"
    try:
        n_train, basis = _training_examples(spec)
    except DataError as exc:
        raise SpecError("dataset", str(exc)) from exc
    try:
        return TrainArgs(**spec.to_train_kwargs()).total_steps(n_train), basis
    except ConfigError as exc:  # the examples may be packed blocks, not rows: say which
        raise SpecError("training.batch_size", f"{exc} ({basis})") from exc


def _training_examples(spec: JobSpec) -> tuple[int, str]:
    """How many examples the worker will train on, by its own reading and hold-out rules. A row is an
    example, except in plain-text causal LM data: the worker packs that into blocks of max_seq_len tokens,
    so the blocks are counted by packing the training rows here the same way."""
    if spec.task != "causal_lm":
        n = count_training_rows(spec)
        return n, f"{n} training rows counted"
    if isinstance(spec.dataset, HubDataset):  # only the split size is known without downloading the rows
        n = count_training_rows(spec)
        return n, (f"{n} training rows counted, an estimate: rows of plain text are packed into blocks of "
                   "training.max_seq_len tokens, which takes reading them; set training.max_steps for an exact length")
    train, _ = read_splits(spec)
    mapping, n = map_columns(spec, train), n_rows(train)
    if mapping.layout != "text":
        return n, f"{n} training rows counted"
    max_len = spec.training.max_seq_len
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_source(), trust_remote_code=False)
        require_vocabulary(tokenizer, spec.model)
    except Exception as exc:  # only the exact count is lost; an unreadable model fails the model check below
        return n, (f"{n} training rows counted, an estimate: plain text is packed into blocks of {max_len} "
                   f"tokens, but the tokenizer of {spec.model!r} could not be read here: "
                   f"{hide_server_paths(first_line(exc))}")
    blocks = len(pack_texts(tokenizer, texts_of(train, mapping.roles["text"]), max_len)[0])
    return blocks, f"{blocks} blocks of up to {max_len} tokens packed from {n} training rows"


def _field_of(message: str) -> str:
    if "target_modules" in message:
        return "budget.target_modules"
    if "tinit" in message or "tfinal" in message:
        return "schedule"
    return "budget"
