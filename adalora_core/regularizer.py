"""The orthogonal regulariser: keeps A's rows and B's columns close to orthonormal, as an SVD's are."""

from __future__ import annotations

import torch

from .layer import SVDLinear


def orthogonal_penalty(modules: list[SVDLinear]) -> torch.Tensor:
    """Mean over all A and B matrices of ||AAᵀ − I||_F and ||BᵀB − I||_F.

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
        total = total + torch.linalg.matrix_norm(gram - eye).sum()
    return total / len(grams)
