"""What every process of a job builds before training: the tokenizer, the tokenised data (cached per host),
the model on its device with the memory savers the spec asks for, and the loop's arguments. The worker's
rank 0 (worker/runner.py) and the other ranks of a data-parallel job (worker/parallel.py) both start here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service import artifacts
from service.jobspec import JobSpec
from service.model_problems import load_problem
from service.settings import get_settings
from service.store import get_store

if TYPE_CHECKING:  # the worker's process loads torch and transformers only inside set_up_run
    import torch
    from transformers import PreTrainedTokenizerBase

    from adalora_core import AdaLoraConfig, TrainArgs
    from worker.data.prepare import PreparedData


class JobError(Exception):
    """A failure the user can fix; the message is stored on the job as it is."""


@dataclass
class RunSetup:
    """What every process of a run builds the same way: the data, the model on its device, the loop's settings."""

    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    config: AdaLoraConfig
    args: TrainArgs
    model: torch.nn.Module
    collate: Callable[[list[dict]], dict[str, torch.Tensor]]
    batch_order: Callable[[int], list[list[int]]]
    dtype: torch.dtype
    quantization: str | None
    source: str  # the model's folder under MODEL_DIRS, or its hub id: looked up once per run


def set_up_run(job_id: str, spec: JobSpec, reporter, device) -> RunSetup:
    """Tokenise (from the host's cache when an earlier attempt or process did), build the model on `device` with
    the job's memory savers. `reporter` hears what the data became; the other ranks of a data-parallel run hear
    nothing."""
    import torch
    from transformers import set_seed
    from transformers.utils import logging as transformers_logging

    import adalora_core as core  # torch and transformers load only here, inside the worker

    transformers_logging.disable_progress_bar()  # bars in a worker log are noise; progress goes to the job row

    from worker.data import length_grouped_order, make_collate, prepare

    source = spec.model_source()
    tokenizer = load_tokenizer(spec, source)
    data = prepare(spec, tokenizer, cache_dir=tokenized_cache_dir())
    report_data(reporter, spec, data)
    config = core.AdaLoraConfig(**spec.to_adalora_kwargs())
    every = get_settings().checkpoint_every or None
    dtype = core.base_dtype(spec.training.base_dtype, device)
    # The folder is set even without periodic checkpoints: a worker shutdown checkpoints where it stops.
    args = core.TrainArgs(**spec.to_train_kwargs(), checkpoint_every=every,
                          checkpoint_every_seconds=get_settings().checkpoint_minutes * 60 or None,
                          checkpoint_dir=str(checkpoint_dir(job_id)), device=str(device),
                          bf16=True if dtype == torch.bfloat16 else None)  # a bf16 base runs under autocast
    set_seed(spec.training.seed)  # a new task head is initialised at random: make that reproducible
    quantization = None if spec.training.quantization == "none" else spec.training.quantization
    model = build(spec, source, num_labels=data.num_labels, config_overrides=data.model_config_overrides(),
                  dtype=dtype, quantization=quantization, device=device)
    if data.packed_from is not None and not core.keeps_packed_examples_apart(model):
        raise JobError(f"model {spec.model!r}: its attention does not keep packed examples apart (its mask ignores "
                       "position_ids): set training.packing to false")
    report_memory_savers(reporter, spec, model, dtype, checkpointing_choice(spec, source, data, config, dtype, device))
    batch_order = length_grouped_order([len(e["input_ids"]) for e in data.train], args.batch_size, args.seed)
    return RunSetup(tokenizer, data, config, args, model, make_collate(tokenizer.pad_token_id), batch_order,
                    dtype, quantization, source)


CHECKPOINTS = "checkpoints"


def checkpoint_dir(job_id: str) -> Path:
    """Where the loop writes checkpoints on this host; each goes to the store (and on record) as it is written."""
    return artifacts.job_dir(job_id) / CHECKPOINTS


def load_tokenizer(spec: JobSpec, source: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as e:
        raise JobError(unknown_model_message(spec.model, e)) from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise JobError(f"model {spec.model!r}: its tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only models usually ship without one
    return tokenizer


def build(spec: JobSpec, source: str, **options):
    """adalora_core.build_model for the job's task; a model that cannot be built fails the job in the user's terms."""
    from adalora_core import build_model

    try:
        return build_model(source, spec.task, **options)
    except Exception as e:
        raise JobError(unknown_model_message(spec.model, e)) from e


def checkpointing_choice(spec: JobSpec, source: str, data, config, dtype, device) -> tuple[bool, str]:
    """(on, why) for gradient checkpointing: the spec's true or false, or for "auto" whether the step's estimated
    peak memory (adalora_core.memory, the model traced on the meta device at this job's batch and longest row)
    fits this process's device without it."""
    setting = spec.training.gradient_checkpointing
    if setting != "auto":
        return setting, f"training.gradient_checkpointing is {str(setting).lower()}"
    from adalora_core import build_model, inject_adalora
    from adalora_core.memory import checkpointing_needed, estimate_training_memory

    empty = build_model(source, spec.task, num_labels=data.num_labels, empty=True,
                        config_overrides=data.model_config_overrides())
    adapted = inject_adalora(empty, config)
    longest = max(len(e["input_ids"]) for e in data.train)
    estimate = estimate_training_memory(adapted, spec.task, batch_size=spec.training.batch_size // spec.resources.gpus,
                                        seq_len=longest, dtype=dtype, checkpointing=False,
                                        quantized=spec.training.quantization == "nf4", device=device.type)
    on, why = checkpointing_needed(estimate, device_memory_bytes(device))
    return on, f"auto: {why}"


def device_memory_bytes(device) -> int:
    """What a training step may fill: the GPU's memory, or on the CPU the host's."""
    import os

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def report_memory_savers(reporter, spec: JobSpec, model, dtype, checkpointing: tuple[bool, str]) -> None:
    """Turns gradient checkpointing on when chosen (checkpointing_choice), and says what the model runs with."""
    from adalora_core import enable_gradient_checkpointing, parameter_count

    on, why = checkpointing
    if on and not enable_gradient_checkpointing(model):
        reporter.event("warning", f"{spec.model!r} does not support gradient checkpointing: training without it")
        on, why = False, "the model does not support it"
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    weights = str(dtype).removeprefix("torch.")
    if spec.training.quantization == "nf4":
        weights = f"4-bit NF4 (computing in {weights})"
    reporter.event("info", f"model: {parameter_count(model):,} parameters in {weights}, attention {attention}, "
                           f"gradient checkpointing {'on' if on else 'off'} ({why})")


def tokenized_cache_dir() -> Path:
    """Per host, whatever the store: rebuilt from the dataset where missing, so never worth sharing."""
    return get_store().local_path("cache/tokenized")


def report_data(reporter, spec: JobSpec, data) -> None:
    """One event for what the data became; warnings for rows cut or dropped, so a user can fix them."""
    labels = {"classification": f", {data.num_labels} labels", "regression": ", regression"}.get(data.kind, "")
    reporter.event("info", f"data: {len(data.train)} training and {len(data.validation)} validation examples"
                   f"{labels}; {data.columns}"
                   + ("; tokenised data reused from the cache" if data.from_cache else ""))
    if data.packed_from is not None:
        reporter.event("info", f"packing: {data.packed_from} training examples joined into {len(data.train)} rows "
                               f"of at most {spec.training.max_seq_len} tokens")
    if data.truncated:
        reporter.event("warning", f"{data.truncated} of {data.rows} rows exceed training.max_seq_len="
                                  f"{spec.training.max_seq_len} tokens and were truncated; raise max_seq_len "
                                  "to keep them whole")
    if data.dropped:
        reporter.event("warning", f"{data.dropped} of {data.rows} rows were left out: blank, or nothing to learn "
                                  "from within max_seq_len (a prompt that fills it, a chat without assistant text)")


def unknown_model_message(model: str, error: BaseException) -> str:
    return f"model {load_problem(model, error)}"
