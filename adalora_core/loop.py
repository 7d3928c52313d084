"""The training loop: setup, train, checkpoint, stop. Usable as a library with no web part.

One optimizer step = `grad_accum` micro-batches. The data order is a pure function of (seed, epoch), so a
checkpoint only needs the step count to know its data position, and resuming is exact.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .allocator import Allocation, RankAllocator
from .compile import compile_choice, compile_layers
from .config import AdaLoraConfig, ConfigError, TrainArgs
from .distributed import (
    accumulating,
    check_batch,
    data_parallel,
    rank0_says,
    rank0_value,
    shard,
    sum_over_processes,
    world,
)
from .inject import Adapted, inject_adalora
from .lr_probe import LrProbe, probe_steps, range_test
from .model_inputs import model_inputs
from .objective import TrainingLoss, enable_lean_loss, task_loss
from .plan import describe_plan
from .prefetch import prefetched
from .regularizer import orthogonal_penalty
from .step_metrics import StepMetrics, metrics_every


class TrainCallbacks:
    """Hooks the loop calls; override what you need. `step` counts optimizer steps completed (1-based)."""

    def on_start(self, total_steps: int, plan: dict) -> None:
        """Once the adapters are in and before the first step (of this attempt, when resuming): the run's
        length and its plan (adalora_core.plan.describe_plan: budgets, parameter counts, initial ranks)."""
    def on_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_allocation(self, step: int, budget: int, ranks: dict[str, int], final: bool, params: int) -> None:
        """After an allocation: the budget (in AdaLoraConfig.budget_unit), each module's kept rank, and
        the adapter parameters kept."""
    def on_event(self, level: str, message: str) -> None: ...
    def on_checkpoint(self, step: int, path: str) -> None: ...
    def should_stop(self) -> bool:
        return False

    def checkpoint_on_stop(self) -> bool:
        """Asked once should_stop() said yes: save a checkpoint of the steps done so far (a shutdown that
        will resume) rather than just stop (a cancel). Needs TrainArgs.checkpoint_dir."""
        return False


@dataclass
class TrainResult:
    adapted: Adapted
    allocator: RankAllocator
    config: AdaLoraConfig          # with total_step filled in
    step: int                      # optimizer steps completed
    stopped: bool                  # True when should_stop() ended the run early
    metrics: dict[str, float] = field(default_factory=dict)  # the last reported metrics
    lr_probe: LrProbe | None = None  # learning_rate "auto": the range test that chose the rate

    @property
    def rank_pattern(self) -> dict[str, list[bool]]:
        return self.allocator.rank_pattern()


def train(model: nn.Module, config: AdaLoraConfig, args: TrainArgs, train_data: Sequence,
          collate: Callable[[list], dict[str, torch.Tensor]],
          eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
          callbacks: TrainCallbacks | None = None, resume_from: str | None = None,
          batch_order: Callable[[int], list[list[int]]] | None = None,
          clock: Callable[[], float] = time.monotonic, warm_start: str | None = None) -> TrainResult:
    """Train `model` with AdaLoRA. `resume_from` continues this very run from its checkpoint; `warm_start`
    starts a new run from another's weights and rank pattern (save_warm_start, or any checkpoint) with fresh
    optimizer state and this run's own schedule. `batch_order(epoch)` may give each epoch's batches as lists of row
    indices (e.g. grouped by length; len(train_data) // batch_size of them, a pure function of the epoch
    so that resuming is exact); by default each epoch is a seeded random permutation. `clock` (seconds)
    times args.checkpoint_every_seconds; tests pass a fake one.

    Under a torch.distributed process group the run is data-parallel (adalora_core.distributed): every
    process calls train with the same arguments; only rank 0's callbacks hear of it."""
    rank, size = world()
    check_batch(args.batch_size, size)
    callbacks = (callbacks or TrainCallbacks()) if rank == 0 else TrainCallbacks()
    total = args.total_steps(len(train_data))
    config = config.with_total_step(total)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = args.bf16 if args.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())

    seed_everything(args.seed)
    adapted = inject_adalora(model, config)
    model.to(device)
    if isinstance(model, PreTrainedModel):
        enable_lean_loss(model)  # before compiling: its check runs a tiny batch through the model
    compiling, compile_why = compile_choice(args.compile, device.type, total, model)
    if compiling:
        compile_layers(model)
    allocator = RankAllocator(adapted.modules, config, total, skip_pruned_modules=size == 1)
    if warm_start and not resume_from:  # before the probe and on_start, so that the plan shows the carried pattern
        _load_warm_start(warm_start, adapted, allocator)
    probe = None
    if args.learning_rate == "auto" and not resume_from:  # a resumed run's rate comes with its optimizer state
        probe = _probe_learning_rate(model, adapted, config, args, train_data, collate, device, bf16, total, size)
        args = replace(args, learning_rate=probe.learning_rate)
    elif args.learning_rate == "auto":  # resuming: the checkpoint's optimizer and scheduler hold the probed rate
        args = replace(args, learning_rate=1.0)
    optimizer = _optimizer(adapted, config, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args, total))
    start, tokens = 0, 0  # optimizer steps and trained tokens done before this attempt
    plan = describe_plan(adapted, allocator, config)
    if probe is not None:
        plan["lr_probe"] = probe.to_dict()
    callbacks.on_start(total, plan)
    if (warning := config.scale_warning()) is not None:
        callbacks.on_event("warning", warning)
    if probe is not None:
        callbacks.on_event("info", probe.summary())
    if compiling or args.compile is True:  # "auto" that stays off is the default and goes unsaid
        callbacks.on_event("info" if compiling else "warning",
                           f"torch.compile {'on for each decoder layer' if compiling else 'off'} ({compile_why})")
    if resume_from:
        start, tokens = _load_checkpoint(resume_from, adapted, optimizer, scheduler, allocator, config)
        callbacks.on_event("info", f"resumed from step {start}")
    modules = list(adapted.modules.values())
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(adapted, allocator, config, start, stopped=False, lr_probe=probe)
    checkpoint_due = _checkpoint_timer(args, start, clock)
    net = data_parallel(TrainingLoss(model), device, size)
    pending = StepMetrics(metrics_every(args, device), size, tokens)

    if rank == 0 and eval_fn is not None and start == 0:
        # Where the run starts (the base model, or the warm start): every later score reads as a gain over it.
        result.metrics = {f"eval_{k}": float(v) for k, v in _evaluate(model, eval_fn, device, bf16).items()}
        callbacks.on_metrics(0, result.metrics)
    model.train()
    batches = prefetched(micro_batches(train_data, collate, args, start * args.grad_accum, batch_order, rank, size),
                         pin=device.type == "cuda")
    try:
        for step in range(start, total):
            # Asked once per read interval: under DDP the answer is a broadcast, which waits for the device. The
            # same steps on every process, or the broadcast would not pair up.
            if (step - start) % pending.every == 0 and rank0_says(callbacks.should_stop(), device, size):
                _report_metrics(pending, result, callbacks)  # the steps taken so far
                result.stopped = True
                callbacks.on_event("info", f"stopped at step {step} of {total}")
                if rank == 0 and args.checkpoint_dir and step > start and callbacks.checkpoint_on_stop():
                    # At a step boundary the state (RNG included) is exactly what a periodic checkpoint holds.
                    path = save_checkpoint(args.checkpoint_dir, step, adapted, optimizer, scheduler, allocator,
                                           config, pending.tokens)
                    callbacks.on_checkpoint(step, path)
                break
            pending.begin_step()
            losses = torch.zeros(2, device=device)  # task loss, orth loss
            step_tokens = 0  # this process's, counted on the CPU before the batch moves: no device sync
            for micro in range(args.grad_accum):
                cpu_batch = next(batches)
                step_tokens += input_tokens(cpu_batch)
                batch = model_inputs(model, cpu_batch, device, label_index=True)
                with accumulating(net, last=micro == args.grad_accum - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        loss = net(**batch)
                    orth = (orthogonal_penalty(modules, config.orth_target) if config.orth_reg_weight > 0
                            else loss.new_zeros(()))
                    ((loss + config.orth_reg_weight * orth) / args.grad_accum).backward()
                losses += torch.stack([loss.detach().float(), orth.detach().float()]) / args.grad_accum
            # One reduction per step: losses and tokens summed over processes (float64 holds any count exactly).
            # The count goes in as a fill, not a copy from the CPU, which would wait for the device.
            count = losses.new_full((1,), step_tokens, dtype=torch.float64)
            sums = sum_over_processes(torch.cat([losses.double(), count]), size)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm or math.inf)
            optimizer.step()
            scheduler.step()
            allocation = allocator.update(step)
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            if allocation is not None:
                _report_allocation(allocation, callbacks)
            pending.add(done, torch.cat([sums, grad_norm.view(1).double()]),
                        {"lr": float(scheduler.get_last_lr()[0]), "budget": float(allocator.current_budget),
                         "adapter_params": float(allocator.kept_params())})
            evaluate = None
            if rank == 0 and eval_fn is not None and (done == total or (args.eval_every
                                                                        and done % args.eval_every == 0)):
                evaluate = partial(_evaluate, model, eval_fn, device, bf16)
            if done == total or evaluate is not None or pending.due:
                _report_metrics(pending, result, callbacks, evaluate)
            if rank == 0 and done < total and checkpoint_due(done):
                _report_metrics(pending, result, callbacks)  # the checkpoint holds the token count up to its step
                assert args.checkpoint_dir is not None, "TrainArgs requires it with checkpoint_every(_seconds)"
                path = save_checkpoint(args.checkpoint_dir, done, adapted, optimizer, scheduler, allocator, config,
                                       pending.tokens)
                callbacks.on_checkpoint(done, path)
    finally:
        batches.close()
    return result


def _probe_learning_rate(model: nn.Module, adapted: Adapted, config: AdaLoraConfig, args: TrainArgs,
                         train_data: Sequence, collate: Callable, device: torch.device, bf16: bool, total: int,
                         size: int) -> LrProbe:
    """The range test on this run's objective (task loss and orthogonal penalty), every process alike; rank 0's
    choice holds for all (floating-point order may differ between devices)."""
    modules = list(adapted.modules.values())

    def step_loss(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = task_loss(model, model_inputs(model, batch, device, label_index=True))
        if config.orth_reg_weight > 0:
            loss = loss + config.orth_reg_weight * orthogonal_penalty(modules, config.orth_target)
        return loss

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    probe = range_test(step_loss, trainable, train_data, collate, args.batch_size // size, probe_steps(total),
                       args.seed, args.max_grad_norm, args.weight_decay)
    probe.learning_rate = rank0_value(probe.learning_rate, device, size)
    return probe


def _checkpoint_timer(args: TrainArgs, start: int, clock: Callable[[], float]) -> Callable[[int], bool]:
    """`due(done)`: whether a periodic checkpoint is due after `done` steps, i.e. checkpoint_every steps or
    checkpoint_every_seconds have passed since the last one (or since the run started). Saying yes restarts
    both counts. Checkpoints only ever fall on step boundaries, so any of them resumes exactly."""
    every_seconds = args.checkpoint_every_seconds
    timed = every_seconds is not None
    last = {"step": start, "time": clock() if timed else 0.0}

    def due(done: int) -> bool:
        now = clock() if timed else 0.0
        if ((args.checkpoint_every and done - last["step"] >= args.checkpoint_every)
                or (every_seconds is not None and now - last["time"] >= every_seconds)):
            last["step"], last["time"] = done, now
            return True
        return False

    return due


def _report_metrics(pending: StepMetrics, result: TrainResult, callbacks: TrainCallbacks,
                    evaluate: Callable[[], dict[str, float]] | None = None) -> None:
    """Reads the waiting steps and reports each; `evaluate` scores the last of them."""
    read = pending.read()
    for at, metrics in read:
        if evaluate is not None and at == read[-1][0]:
            metrics.update({f"eval_{k}": float(v) for k, v in evaluate().items()})
        callbacks.on_metrics(at, metrics)
        result.step, result.metrics = at, metrics


def _report_allocation(allocation: Allocation, callbacks: TrainCallbacks) -> None:
    if allocation.warning:
        warnings.warn(allocation.warning, RuntimeWarning, stacklevel=3)
        callbacks.on_event("warning", allocation.warning)
    callbacks.on_allocation(allocation.step + 1, allocation.budget, allocation.ranks, allocation.final,
                            allocation.params)


def _evaluate(model: nn.Module, eval_fn: Callable[[nn.Module], dict[str, float]], device: torch.device,
              bf16: bool) -> dict[str, float]:
    """eval_fn under the training step's autocast: the same numerics as training, at bf16's speed on a GPU."""
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return eval_fn(model)
    finally:
        model.train()


def _optimizer(adapted: Adapted, config: AdaLoraConfig, args: TrainArgs) -> torch.optim.Optimizer:
    """AdamW; the singular values E may take a larger learning rate (config.e_lr_multiplier)."""
    assert not isinstance(args.learning_rate, str), "train() replaces \"auto\" with a rate first"
    e_params = {id(m.lora_E) for m in adapted.modules.values()}
    trainable = [p for p in adapted.model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in e_params], "lr": args.learning_rate},
        {"params": [p for p in trainable if id(p) in e_params],
         "lr": args.learning_rate * config.e_lr_multiplier},
    ]
    # One fused kernel for all parameters on a GPU; the foreach default elsewhere (fused needs CUDA or MPS).
    fused = next(iter(adapted.modules.values())).lora_A.device.type == "cuda"
    return torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=args.weight_decay, fused=fused)


def lr_lambda(args: TrainArgs, total: int) -> Callable[[int], float]:
    """The LR factor per optimizer step: linear warmup, then linear decay, cosine or constant. Public so a
    baseline (bench/quality.py's LoRA) trains on exactly the same schedule."""
    warmup = int(args.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if args.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if args.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)

    return factor


def input_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The input tokens of a collated batch (on the CPU: no device sync) that are not padding: the ones of its 2-D
    attention mask, or without one every input token."""
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return int(mask.sum())
    return batch["input_ids"].numel()


def micro_batches(data: Sequence, collate: Callable[[list], dict], args: TrainArgs, skip: int,
                  batch_order: Callable[[int], list[list[int]]] | None, rank: int = 0,
                  size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches, epoch after epoch, starting `skip` micro-batches in. Deterministic in
    (args.seed, epoch), which is what makes a resumed run, or a baseline, see the same batches. Process
    `rank` of `size` gets its share of each."""
    per_epoch = len(data) // args.batch_size
    epoch, index = divmod(skip, per_epoch)
    while True:
        batches = (batch_order or partial(_random_batches, len(data), args))(epoch)
        if len(batches) != per_epoch:
            raise ValueError(f"batch_order gave {len(batches)} batches for epoch {epoch}; expected {per_epoch}")
        for rows in batches[index:]:
            yield collate([data[j] for j in shard(rows, rank, size)])
        epoch, index = epoch + 1, 0


def _random_batches(n: int, args: TrainArgs, epoch: int) -> list[list[int]]:
    """Epoch e's order is the permutation seeded by (seed, e); the last partial batch is dropped."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)).tolist()
    return [order[i * args.batch_size:(i + 1) * args.batch_size] for i in range(n // args.batch_size)]


def seed_everything(seed: int) -> None:
    """What train() seeds before injecting: Python's and torch's generators."""
    random.seed(seed)
    torch.manual_seed(seed)


# -- checkpoints ------------------------------------------------------------------------------------

def save_checkpoint(folder: str, step: int, adapted: Adapted, optimizer: torch.optim.Optimizer,
                    scheduler: Any, allocator: RankAllocator, config: AdaLoraConfig, tokens: int = 0) -> str:
    """Everything a resume needs; the data position follows from `step`, and `tokens` (trained so far) lets the
    resumed run's count go on exactly. Written atomically."""
    os.makedirs(folder, exist_ok=True)
    state = {
        "step": step,
        "tokens": tokens,
        "config": asdict(config),
        "trainable": {n: p.detach().cpu() for n, p in adapted.model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "allocator": allocator.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    path = os.path.join(folder, f"step-{step:08d}.pt")
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def save_warm_start(path: str, result: TrainResult) -> str:
    """The trained weights (adapters and heads) and the allocator's pattern and scores at the end of a run,
    for train(warm_start=...). No optimizer state: a new run starts its own. Written atomically."""
    adapted = result.adapted
    state = {"trainable": {n: p.detach().cpu() for n, p in adapted.model.named_parameters() if p.requires_grad},
             "allocator": result.allocator.state_dict(), "step": result.step}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def _load_warm_start(path: str, adapted: Adapted, allocator: RankAllocator) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file (or a checkpoint)
    params = dict(adapted.model.named_parameters())
    for name, value in state["trainable"].items():
        if name not in params:
            raise ConfigError(f"the run to start from trained {name}, which this model does not have: use the "
                              "same model and target modules")
        if params[name].shape != value.shape:
            what = "task head" if ".lora_" not in name else "adapter"
            raise ConfigError(f"the run to start from has a {what} of another shape at {name} "
                              f"({tuple(value.shape)} vs {tuple(params[name].shape)}): use the same init_r and, "
                              "for a classifier, the same labels")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    try:
        allocator.carry_over(state["allocator"])
    except ValueError as exc:
        raise ConfigError(f"the run to start from: {exc}; use the same target modules") from None


def _load_checkpoint(path: str, adapted: Adapted, optimizer: torch.optim.Optimizer, scheduler: Any,
                     allocator: RankAllocator, config: AdaLoraConfig) -> tuple[int, int]:
    """Puts the checkpoint's state in place; returns its (step, trained tokens)."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by save_checkpoint
    if state["config"] != asdict(config):
        raise ConfigError(f"checkpoint {path} was written with a different configuration: resume with the same one")
    params = dict(adapted.model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    allocator.load_state_dict(state["allocator"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    # A checkpoint from before tokens were counted resumes its count from 0: tokens trained since the resume.
    return state["step"], state.get("tokens", 0)
