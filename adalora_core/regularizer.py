"""The orthogonal regulariser: keeps A's rows and B's columns orthogonal to one another, as an SVD's are."""

from __future__ import annotations

import torch

from .layer import SVDLinear


def orthogonal_penalty(modules: list[SVDLinear], target: str = "orthogonal") -> torch.Tensor:
    """Mean over all A and B matrices of ||AAᵀ − D||_F and ||BᵀB − D||_F.

    target="orthonormal" (the paper's): D = I, so the rows of A and the columns of B are also pulled to unit
    length. target="orthogonal": D = diag(AAᵀ), only the overlaps between triplets are penalised and their
    lengths are left to the task. With the lora start (B = 0) the paper's target pushes B away from zero
    wherever the task gradient is still small, i.e. adds a random update of norm lora_alpha / init_r per
    rank to every adapted layer: on STS-B that kept runs at the label mean (bench/results_quality.md).

    Add `orth_reg_weight * orthogonal_penalty(...)` to whatever task loss the loop computes. Matrices of
    the same shape are stacked, so the cost is a few batched matmuls rather than one per module.
    """
    grams = [m.lora_A for m in modules] + [m.lora_B.T for m in modules]  # each (r, d): gram = X Xᵀ
    total = grams[0].new_zeros(())
    groups: dict[torch.Size, list[torch.Tensor]] = {}
    for x in grams:
        groups.setdefault(x.shape, []).append(x)
    for xs in groups.values():
        stacked = torch.stack(xs)
        gram = stacked @ stacked.transpose(1, 2)
        eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
        total = total + torch.linalg.matrix_norm(gram - eye if target == "orthonormal" else gram * (1 - eye)).sum()
    return total / len(grams)
