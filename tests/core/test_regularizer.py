"""The orthogonal regulariser: overlaps between triplets always cost; their lengths only with the paper's target."""

import pytest
import torch
from torch import nn

from adalora_core import AdaLoraConfig, SVDLinear, orthogonal_penalty
from adalora_core.config import ConfigError


def adapter(a: torch.Tensor, b: torch.Tensor) -> SVDLinear:
    layer = SVDLinear(nn.Linear(a.shape[1], b.shape[0]), r=a.shape[0], scaling=1)
    with torch.no_grad():
        layer.lora_A.copy_(a)
        layer.lora_B.copy_(b)
    return layer


def test_orthogonal_rows_of_any_length_cost_nothing_but_the_paper_wants_unit_length():
    a = torch.diag(torch.tensor([3.0, 0.5])) @ torch.eye(2, 4)  # orthogonal rows of lengths 3 and 0.5
    b = torch.zeros(5, 2)  # the lora start
    layer = adapter(a, b)
    assert float(orthogonal_penalty([layer], "orthogonal")) == 0.0
    # the paper's: ||AAᵀ - I|| = ||diag(8, -0.75)|| and ||BᵀB - I|| = ||-I|| = √2, averaged over A and B
    expected = (torch.tensor([8.0, -0.75]).norm() + 2 ** 0.5) / 2
    assert float(orthogonal_penalty([layer], "orthonormal")) == pytest.approx(float(expected))


def test_overlapping_triplets_cost_the_same_under_both_targets():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])  # unit rows with overlap 0.6
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # orthonormal columns
    layer = adapter(a, b)
    overlap = (2 * 0.6 ** 2) ** 0.5 / 2  # the two off-diagonal 0.6s of AAᵀ; BᵀB = I
    assert float(orthogonal_penalty([layer], "orthogonal")) == pytest.approx(overlap)
    assert float(orthogonal_penalty([layer], "orthonormal")) == pytest.approx(overlap)


def test_near_the_lora_start_only_the_paper_target_pushes_b_to_grow():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(6, 4), r=3, scaling=1, init="lora")
    with torch.no_grad():
        layer.lora_B.normal_(std=1e-3)  # a hair away from B = 0, as after a first task step
    b = layer.lora_B.detach().clone()
    for target in ("orthogonal", "orthonormal"):
        layer.zero_grad()
        penalty = orthogonal_penalty([layer], target)
        penalty.backward()
        along_b = float((layer.lora_B.grad * b).sum())  # > 0: descent shrinks B; < 0: descent grows it
        if target == "orthogonal":
            assert along_b > 0  # the overlaps are quadratic in B: only shrinking B lowers them
        else:
            assert along_b < 0  # ||BᵀB - I|| falls as B's columns grow towards unit length


def test_an_unknown_target_is_refused():
    with pytest.raises(ConfigError, match="orth_target must be orthogonal or orthonormal"):
        AdaLoraConfig(orth_target="unit")
