"""The per-step figures that live on the device (losses, tokens, gradient norm), read back in batches.

Reading a tensor's value waits for the device to finish every queued kernel, so a read per step keeps a GPU from
running ahead of Python. The loop hands each step's figures here and reads them every `every` steps (and before
anything that needs them: an evaluation, a checkpoint, the end, a stop), in one transfer.
"""

from __future__ import annotations

import math
import time

import torch

from .config import METRICS_EVERY_ON_ACCELERATORS, TrainArgs


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number: every later step would only spread NaNs through the weights."""


def metrics_every(args: TrainArgs, device: torch.device) -> int:
    if args.metrics_every is not None:
        return args.metrics_every
    return 1 if device.type == "cpu" else METRICS_EVERY_ON_ACCELERATORS


class StepMetrics:
    """Steps waiting to be read. `tokens` counts trained tokens up to the last step read."""

    def __init__(self, every: int, processes: int, tokens: int) -> None:
        self.every, self.processes, self.tokens = every, processes, tokens
        self._steps: list[tuple[int, dict[str, float]]] = []
        self._values: list[torch.Tensor] = []
        self._began: float | None = None

    def begin_step(self) -> None:
        """Marks the start of a step: tokens_per_s covers the steps' own time, not evaluations or checkpoints
        between reads. perf_counter, not the loop's `clock`, which tests may fake."""
        if self._began is None:
            self._began = time.perf_counter()

    def add(self, done: int, on_device: torch.Tensor, known: dict[str, float]) -> None:
        """`on_device`: the step's task loss and orthogonal loss summed over processes, its trained tokens summed
        over processes, its gradient norm. `known`: the figures already on the host (lr, budget, ...)."""
        self._steps.append((done, known))
        self._values.append(on_device)

    @property
    def due(self) -> bool:
        return len(self._steps) >= self.every

    def read(self) -> list[tuple[int, dict[str, float]]]:
        """Every waiting step's metrics, in order; raises TrainingDiverged at the first non-finite loss."""
        if not self._steps:
            return []
        rows = torch.stack(self._values).tolist()  # the one device sync
        assert self._began is not None, "begin_step() starts every step"
        rate = sum(row[2] for row in rows) / max(time.perf_counter() - self._began, 1e-9)
        read = []
        for (done, known), (task_loss, orth_loss, tokens, grad_norm) in zip(self._steps, rows):
            task_loss, orth_loss = task_loss / self.processes, orth_loss / self.processes  # means over processes
            if not math.isfinite(task_loss):
                raise TrainingDiverged(f"the training loss became {task_loss} at step {done}: the run diverged; "
                                       "lower the learning rate, or clip gradients (max_grad_norm)")
            self.tokens += int(tokens)
            read.append((done, {"loss": task_loss, "lr": known["lr"], "orth_loss": orth_loss, "grad_norm": grad_norm,
                                **{k: v for k, v in known.items() if k != "lr"}, "tokens": float(self.tokens),
                                "tokens_per_s": rate}))
        self._steps, self._values, self._began = [], [], None
        return read
