"""The dry run's memory section: a training step's estimated peak GPU memory, and whether it fits a card.

The estimate is adalora_core.memory's (the model's forward pass traced on the meta device). This module
applies the job spec's own rules to it: the worker's choice of base dtype and of gradient checkpointing, 4-bit
weights, the batch and length asked; and when the job does not fit the card, what each knob would give.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from adalora_core import AdaLoraConfig, Adapted, build_model, inject_adalora
from adalora_core.hf import BASE_DTYPES
from adalora_core.memory import (
    MemoryEstimate,
    base_weight_bytes,
    checkpointing_needed,
    estimate_training_memory,
    fits,
)
from api.schemas import CardPublic, MemoryPublic
from service.gpu_cards import GIB, Card
from service.jobspec import MAX_GRAD_ACCUM, JobSpec

DTYPE_NAMES = {dtype: name for name, dtype in BASE_DTYPES.items()}


@dataclass(frozen=True)
class StepShape:
    """What a training step's memory depends on, as the worker would run the job."""

    adapted: Adapted
    task: str
    batch_size: int
    seq_len: int
    dtype: torch.dtype
    checkpointing: bool
    quantized: bool

    def estimate(self, **changes) -> MemoryEstimate:
        shape = replace(self, **changes)
        return estimate_training_memory(shape.adapted, shape.task, batch_size=shape.batch_size,
                                        seq_len=shape.seq_len, dtype=shape.dtype, checkpointing=shape.checkpointing,
                                        quantized=shape.quantized)


def plan_memory(spec: JobSpec, total_steps: int, card: Card | None) -> MemoryPublic:
    config = replace(AdaLoraConfig(**spec.to_adalora_kwargs()), init="gaussian").with_total_step(total_steps)
    model = build_model(spec.model_source(), spec.task, empty=True)
    supported = bool(getattr(model, "supports_gradient_checkpointing", False))
    seq_len, notes = _length(spec, model)
    dtype, dtype_from = _dtype(spec, card)
    gpus = spec.resources.gpus  # data-parallel: each device holds the model and its share of the batch
    asked = spec.training.gradient_checkpointing
    shape = StepShape(inject_adalora(model, config), spec.task, spec.training.batch_size // gpus, seq_len, dtype,
                      supported and asked is True, spec.training.quantization == "nf4")
    est = shape.estimate()
    if asked == "auto" and supported and card is not None:  # the worker's rule, for the card asked
        on, why = checkpointing_needed(est, card.memory_bytes)
        notes.append(f"training.gradient_checkpointing auto: {'on' if on else 'off'} on the {card.name}, as {why}")
        shape, est = replace(shape, checkpointing=on), est.with_checkpointing(on)
    elif asked == "auto":
        notes.append("training.gradient_checkpointing auto: estimated without it; the worker turns it on only where "
                     "the step does not fit its device (name the card in `gpu` to check one)")
    fit = None if card is None else fits(est.peak, card.memory_bytes)
    return MemoryPublic(
        dtype=DTYPE_NAMES[dtype], dtype_from=dtype_from, batch_size=shape.batch_size, seq_len=seq_len,
        notes=notes + ([f"per device: training.batch_size {spec.training.batch_size} over resources.gpus {gpus}; "
                        "DDP's gradient buckets add about the adapters' gradients once more"] if gpus > 1 else []),
        quantization=spec.training.quantization, gradient_checkpointing=est.gradient_checkpointing,
        weights_bytes=est.weights, trainable_bytes=est.trainable, gradients_bytes=est.gradients,
        optimizer_bytes=est.optimizer, allocator_bytes=est.allocator, activations_bytes=est.activations,
        backward_bytes=est.backward, peak_bytes=est.peak,
        peak_checkpointing_off_bytes=est.with_checkpointing(False).peak,
        peak_checkpointing_on_bytes=est.with_checkpointing(True).peak if supported else None,
        card=None if card is None else CardPublic(name=card.name, memory_bytes=card.memory_bytes, bf16=card.bf16),
        fits=fit, advice=[] if card is None or fit else _advice(spec, card, shape, est, supported))


def _length(spec: JobSpec, model) -> tuple[int, list[str]]:
    """max_seq_len, unless the model has fewer positions: no row it can take is longer."""
    asked = spec.training.max_seq_len
    positions = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions >= asked:
        return asked, []
    return positions, [f"training.max_seq_len {asked} is above the {positions} positions of {spec.model!r}: "
                       f"estimated at {positions} tokens. Rows longer than that do not fit the model; lower "
                       f"max_seq_len to {positions}"]


def _dtype(spec: JobSpec, card: Card | None) -> tuple[torch.dtype, str]:
    """The worker's rule (adalora_core.base_dtype) for the card asked, rather than for this API host."""
    name = spec.training.base_dtype
    if name != "auto":
        return BASE_DTYPES[name], f"training.base_dtype {name}"
    if card is None:
        return torch.bfloat16, ("training.base_dtype auto, taken as bf16: what it is on a GPU with bf16 (Ampere "
                                "or newer); name the card in `gpu` to check it against one")
    if card.bf16:
        return torch.bfloat16, f"training.base_dtype auto: bf16 on the {card.name}"
    return torch.float32, f"training.base_dtype auto: fp32, as the {card.name} has no bf16"


def _advice(spec: JobSpec, card: Card, shape: StepShape, est: MemoryEstimate, supported: bool) -> list[str]:
    """Each knob that lowers the peak, with the peak it gives on its own, and whether that fits."""

    def said(change: str, peak: int) -> str:
        verdict = "fits" if fits(peak, card.memory_bytes) else "still too large"
        return f"{change}: peak {peak / GIB:.1f} GiB ({verdict})"

    advice = []
    if supported and not shape.checkpointing:
        advice.append(said("training.gradient_checkpointing true", est.with_checkpointing(True).peak))
    if shape.dtype == torch.float32 and card.bf16:
        advice.append(said("training.base_dtype bf16", shape.estimate(dtype=torch.bfloat16).peak))
    if not shape.quantized:
        nf4 = base_weight_bytes(shape.adapted, shape.dtype, quantized=True)
        advice.append(said("training.quantization nf4", est.peak - est.weights + nf4))
    gpus, batch = spec.resources.gpus, shape.batch_size // 2  # per device
    while batch >= 1:  # the largest power-of-two fraction of the batch that fits, or a batch of one
        smaller = shape.estimate(batch_size=batch)
        accum = spec.training.grad_accum * shape.batch_size // batch
        if accum > MAX_GRAD_ACCUM:
            break
        if fits(smaller.peak, card.memory_bytes) or batch == 1:
            advice.append(said(f"training.batch_size {batch * gpus} with training.grad_accum {accum} (the same "
                               "effective batch)", smaller.peak))
            break
        batch //= 2
    if shape.seq_len >= 16:
        advice.append(said(f"training.max_seq_len {shape.seq_len // 2}",
                           shape.estimate(seq_len=shape.seq_len // 2).peak))
    advice.append(f"or a card with more memory than the {card.name}'s {card.memory_bytes / GIB:.1f} GiB, "
                  "or a smaller model")
    return advice
