"""SVDLinear: a frozen linear layer plus the SVD-shaped update dW = B · (A ⊙ E) · scaling
(AdaLoraConfig.scale: lora_alpha / sqrt(init_r) by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from bitsandbytes.functional import QuantState


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2) stores its weight as (in, out) and computes x @ W + b."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def quant_state(module: nn.Module) -> QuantState | None:
    """The scales of a bitsandbytes 4-bit layer's packed weight; None for any other layer."""
    return getattr(getattr(module, "weight", None), "quant_state", None)


def is_quantized(module: nn.Module) -> bool:
    """A bitsandbytes 4-bit layer: its weight is packed, with the scales in a quant_state."""
    return quant_state(module) is not None


class SVDLinear(nn.Module):
    """Wraps `base` (nn.Linear or Conv1D). A: (r, in), E: (r, 1), B: (out, r), all fp32 and trainable.

    dW is zero at step 0, so the wrapped layer equals the base layer: E = 0 for the SVD-style inits (the
    paper's), or B = 0 with E = 1 for init="lora" (LoRA's own start, where B learns from the first step).
    Pruning a rank zeroes its E entry; the mask lives in the allocator, not here.
    """

    in_features: int
    out_features: int

    def __init__(self, base: nn.Module, r: int, scaling: float, dropout: float = 0.0,
                 init: str = "gaussian") -> None:
        super().__init__()
        self.base = base
        self.fan_in_fan_out = is_conv1d(base)
        weight = self.weight
        if is_quantized(base):  # the packed 4-bit weight's shape is not the layer's
            assert isinstance(base, nn.Linear), "bitsandbytes' Linear4bit is an nn.Linear"
            self.in_features, self.out_features = base.in_features, base.out_features
        else:
            self.in_features, self.out_features = (weight.shape if self.fan_in_fan_out else weight.shape[::-1])
        self.r = r
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device = weight.device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device, dtype=torch.float32))
        self.lora_E = nn.Parameter(torch.zeros(r, 1, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, device=device, dtype=torch.float32))
        self.merged = False
        # Set by the allocator once the final mask holds no rank of this module: dW is zero for the rest of the
        # run, so the forward pass skips the adapter (and its gradients) entirely.
        self.pruned = False
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str) -> None:
        self.lora_E.zero_()
        if init == "lora":  # LoRA's start: A as nn.Linear initialises a weight, B = 0, every E = 1
            nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
            self.lora_B.zero_()
            self.lora_E.fill_(1.0)
        elif init == "gaussian":  # the paper's and PEFT's choice
            nn.init.normal_(self.lora_A, std=0.02)
            nn.init.normal_(self.lora_B, std=0.02)
        elif init == "orthogonal":
            nn.init.orthogonal_(self.lora_A)
            nn.init.orthogonal_(self.lora_B)
        elif init == "svd":  # start in the principal subspace of W, so E's first gradients are large
            w = self.weight_out_in().float()
            k = min(self.r, *w.shape)
            # A randomised SVD is plenty for an initialisation and cheap on large matrices.
            u, _, v = torch.svd_lowrank(w, q=min(k + 8, *w.shape), niter=4)
            vh = v.T
            self.lora_B.zero_()
            self.lora_A.zero_()
            self.lora_B[:, :k] = u[:, :k]
            self.lora_A[:k] = vh[:k]
            if k < self.r:  # more ranks than the matrix has: fill the rest orthogonally
                nn.init.orthogonal_(self.lora_A[k:])
                nn.init.orthogonal_(self.lora_B[:, k:])
        else:
            raise ValueError(f"unknown init {init!r}")

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight: some models read `layer.weight` (T5's MLP checks its dtype)."""
        weight = self.base.weight
        assert isinstance(weight, torch.Tensor)  # nn.Module types its attributes as Tensor | Module
        return weight

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self.base.bias
        assert bias is None or isinstance(bias, torch.Tensor)
        return bias

    def weight_out_in(self) -> torch.Tensor:
        if (state := quant_state(self.base)) is not None:
            from bitsandbytes.functional import dequantize_4bit

            return dequantize_4bit(self.weight.data, state)
        w = self.weight
        return w.T if self.fan_in_fan_out else w

    def delta_weight(self) -> torch.Tensor:
        """dW as (out, in), fp32."""
        return (self.lora_B @ (self.lora_A * self.lora_E)) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged or self.pruned:
            return result
        h = self.dropout(x)
        if h.dtype != self.lora_A.dtype and not torch.is_autocast_enabled(h.device.type):
            h = h.to(self.lora_A.dtype)  # bf16/fp16 base, fp32 adapter
        # The scale rides on the small (r, in) factor rather than on the (tokens, out) product, and the add
        # fuses into the last GEMM: no extra full-size passes over the layer's output.
        down = h @ (self.lora_A * (self.lora_E * self.scaling)).T
        if down.dtype != result.dtype:  # an fp32 adapter on a bf16 base outside autocast
            return result + (down @ self.lora_B.T).to(result.dtype)
        flat = torch.addmm(result.reshape(-1, self.out_features), down.reshape(-1, self.r), self.lora_B.T)
        return flat.view(result.shape)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        if is_quantized(self.base):
            raise ValueError("a 4-bit base weight cannot take dW in place: merge into a full-precision copy "
                             "(export.save_merged with base_model=)")
        w = self.weight
        delta = self.delta_weight()
        w += (delta.T if self.fan_in_fan_out else delta).to(w.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.weight
        delta = self.delta_weight()
        w -= (delta.T if self.fan_in_fan_out else delta).to(w.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling:g}"
