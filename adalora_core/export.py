"""Export: a PEFT `ADALORA` adapter folder, and merged weights that plain transformers loads."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from .loop import TrainResult
from .lora_format import AdapterLayout

PEFT_PREFIX = "base_model.model."


def save_peft_adapter(result: TrainResult, out_dir: str, base_model: str | None = None,
                      task_type: str | None = None) -> AdapterLayout:
    """adapter_config.json + adapter_model.safetensors, pruned ranks removed, loadable by stock PEFT; returns
    what it wrote, for the LoRA writers (adalora_core.lora_format)."""
    adapted, config = result.adapted, result.config
    pattern = result.rank_pattern
    tensors: dict[str, torch.Tensor] = {}
    for name, module in adapted.modules.items():
        keep = torch.tensor(pattern[name], dtype=torch.bool, device=module.lora_E.device)
        key = PEFT_PREFIX + name
        tensors[key + ".lora_A"] = module.lora_A.detach()[keep]
        tensors[key + ".lora_E"] = module.lora_E.detach()[keep]
        tensors[key + ".lora_B"] = module.lora_B.detach()[:, keep]
    for head in adapted.heads:
        for pname, p in adapted.model.get_submodule(head).named_parameters():
            tensors[f"{PEFT_PREFIX}{head}.{pname}"] = p.detach()
    assert config.total_step is not None, "train() fills it in"
    tinit, tfinal = config.schedule_steps(config.total_step)
    peft_config = {
        "peft_type": "ADALORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "init_r": config.init_r,
        "target_r": round(sum(sum(v) for v in pattern.values()) / len(pattern)),
        "r": config.init_r,  # unused by AdaLoRA; set to init_r so PEFT does not warn
        # PEFT scales by lora_alpha / init_r: the alpha that gives our scale, whatever our scaling rule.
        "lora_alpha": config.scale * config.init_r,
        "lora_dropout": config.lora_dropout,
        "target_modules": sorted(adapted.modules),
        "modules_to_save": adapted.heads or None,
        # PEFT reads a key's module path by dropping its last component.
        "rank_pattern": {f"{name}.lora_E": keep for name, keep in pattern.items()},
        "total_step": config.total_step,
        "tinit": tinit,
        "tfinal": tfinal,
        "deltaT": config.delta_t,
        "beta1": config.beta1,
        "beta2": config.beta2,
        "orth_reg_weight": config.orth_reg_weight,
        "fan_in_fan_out": any(m.fan_in_fan_out for m in adapted.modules.values()),
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
    }
    os.makedirs(out_dir, exist_ok=True)
    written = {k: v.float().contiguous().cpu() for k, v in tensors.items()}
    save_file(written, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(peft_config, f, indent=2, sort_keys=True)
    return AdapterLayout(json.loads(json.dumps(peft_config)), written)  # as a reader of the file would see it


def merged_state_dict(result: TrainResult, base_model=None) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter folded into its weight; the model is left untouched.
    `base_model`: a full-precision copy of the base to merge into instead (a 4-bit base cannot hold dW); the
    trained task heads are taken from the run."""
    adapted = result.adapted
    state = {}
    source = adapted.model if base_model is None else base_model
    for key, value in source.state_dict().items():
        if ".lora_" in key:
            continue
        state[key.replace(".base.", ".")] = value
    if base_model is not None:
        for head in adapted.heads:
            for name, value in adapted.model.get_submodule(head).state_dict().items():
                state[f"{head}.{name}"] = value
    for name, module in adapted.modules.items():
        delta = module.delta_weight().detach()
        weight = state[f"{name}.weight"]
        state[f"{name}.weight"] = weight + (delta.T if module.fan_in_fan_out else delta).to(weight.device, weight.dtype)
    return state


def save_merged(result: TrainResult, out_dir: str, base_model=None) -> None:
    """Merged weights via transformers' save_pretrained (safetensors); save the tokenizer beside it yourself.
    Pass `base_model` (the base loaded in full precision) when the run trained on a 4-bit base."""
    model = result.adapted.model if base_model is None else base_model
    model.save_pretrained(out_dir, state_dict=merged_state_dict(result, base_model),  # type: ignore[operator]
                          safe_serialization=True)  # (a transformers model: nn.Module types it as Tensor | Module)
