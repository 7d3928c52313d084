"""Wrap a transformers model's target linears in SVDLinear, freeze the rest, keep the task head trainable."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .config import AdaLoraConfig, ConfigError, default_target_modules
from .layer import SVDLinear, is_conv1d

# Top-level children that are task heads: newly initialised, so they must train and be exported.
HEAD_NAMES = ("classifier", "score", "qa_outputs")


@dataclass
class Adapted:
    """A model with AdaLoRA injected: the modules the allocator manages and the heads trained in full."""

    model: nn.Module
    config: AdaLoraConfig
    modules: dict[str, SVDLinear]
    heads: list[str]

    def parameter_counts(self) -> dict[str, int]:
        adapter = sum(p.numel() for m in self.modules.values() for p in (m.lora_A, m.lora_E, m.lora_B))
        heads = sum(p.numel() for h in self.heads for p in self.model.get_submodule(h).parameters())
        total = sum(p.numel() for p in self.model.parameters())
        return {"adapter": adapter, "heads": heads, "trainable": adapter + heads, "total": total}


def _inputs_to_fp32(module, args, kwargs):
    def cast(v):
        return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def inject_adalora(model: nn.Module, config: AdaLoraConfig) -> Adapted:
    targets = config.target_modules
    if targets is None:
        targets = default_target_modules(getattr(getattr(model, "config", None), "model_type", "unknown"))
    heads = config.modules_to_save
    if heads is None:
        heads = [name for name, _ in model.named_children() if name in HEAD_NAMES]
    names = [name for name, module in model.named_modules()
             if _is_linear(module) and _matches(name, targets) and not _under(name, heads)]
    if not names:
        raise ConfigError(f"target_modules {targets!r} matched no linear layer: "
                          "pass names that appear in model.named_modules()")
    model.requires_grad_(False)
    modules = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = SVDLinear(getattr(parent, child), config.init_r, config.scale,
                            config.lora_dropout, config.init)
        setattr(parent, child, wrapped)
        modules[name] = wrapped
    for head in heads:
        # Trained in full, so kept in fp32 like the adapters; a bf16 base's hidden states are cast on the way in
        # (under autocast or not: evaluation runs without it).
        module = model.get_submodule(head).float().requires_grad_(True)
        module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)
    return Adapted(model, config, modules, list(heads))


def unload(adapted: Adapted, merge: bool) -> nn.Module:
    """Put the base layers back (merging the adapter into them first if asked); returns the plain model."""
    for name, module in adapted.modules.items():
        if merge:
            module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = adapted.model.get_submodule(parent_name) if parent_name else adapted.model
        setattr(parent, child, module.base)
    return adapted.model


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def _matches(name: str, targets: list[str] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)
