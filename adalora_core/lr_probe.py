"""`learning_rate: "auto"`: a learning-rate range test on the job's own data before training.

The adapters train for a few steps while the rate grows geometrically from LR_MIN to LR_MAX; the loss, smoothed,
falls once the rate is large enough to move the weights and blows up once it is too large. The rate chosen
is a tenth of the one at the lowest smoothed loss: the largest rate that is still well inside the stable
range. Afterwards the weights and random state are put back, so the run itself is the run a spec with that
rate would give. The probe is deterministic for a seed: its batches are a seeded draw from the training data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

LR_MIN, LR_MAX = 1e-5, 1e-1
PROBE_SHARE = 0.05                 # of the run's optimizer steps
MIN_STEPS, MAX_STEPS = 16, 100     # fewer points cannot place a minimum; more adds cost, not precision
SMOOTHING = 0.7                    # EMA weight of the past, bias-corrected (the probe has few points)
DIVERGED = 4.0                     # stop once the smoothed loss is this many times its lowest


@dataclass
class LrProbe:
    learning_rate: float           # the rate chosen
    steps: int                     # probe steps taken
    lrs: list[float]               # the rate at each step
    losses: list[float]            # the smoothed loss at each step
    lowest_at: float               # the rate at the lowest smoothed loss

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"learning rate auto: {self.learning_rate:.3g}, a tenth of {self.lowest_at:.3g} where the smoothed "
                f"loss was lowest in a {self.steps}-step range test ({self.lrs[0]:.0e} to {self.lrs[-1]:.2g})")


def probe_steps(total_steps: int) -> int:
    return min(MAX_STEPS, max(MIN_STEPS, round(PROBE_SHARE * total_steps)))


def range_test(step_loss: Callable[[dict], torch.Tensor], trainable: Sequence[nn.Parameter],
               train_data: Sequence, collate: Callable[[list], dict], batch_size: int, steps: int, seed: int,
               max_grad_norm: float | None, weight_decay: float) -> LrProbe:
    """Runs the test with `step_loss(batch)` (the training objective of one batch, handed over as collated: it
    moves the batch to the device) and restores the weights and torch's random state; returns what it chose."""
    saved = [p.detach().clone() for p in trainable]
    rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    optimizer = torch.optim.AdamW(trainable, lr=LR_MIN, weight_decay=weight_decay)
    growth = (LR_MAX / LR_MIN) ** (1 / max(1, steps - 1))
    draw = random.Random(f"lr-probe-{seed}")
    lrs, smoothed = [], []
    average = 0.0
    try:
        for i in range(steps):
            lr = LR_MIN * growth ** i
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = draw.sample(range(len(train_data)), min(batch_size, len(train_data)))
            loss = step_loss(collate([train_data[j] for j in rows]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            lrs.append(lr)
            smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
            if smoothed[-1] > DIVERGED * min(smoothed):
                break
    finally:
        with torch.no_grad():
            for p, kept in zip(trainable, saved):
                p.copy_(kept)
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
    if not lrs:
        raise FloatingPointError("the first probe step already gave a non-finite loss")
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    chosen = max(LR_MIN, lrs[lowest] / 10)
    return LrProbe(float(f"{chosen:.3g}"), len(lrs), lrs, smoothed, lrs[lowest])
