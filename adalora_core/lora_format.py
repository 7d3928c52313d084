"""An AdaLoRA adapter rewritten as plain LoRA, for what cannot read AdaLoRA (vLLM, TGI, LoRAX read `lora_A`,
`lora_B` and one alpha/r).

The rewrite is exact. A module keeps the ranks S that survived pruning, and its update is
    dW = B[:, S] · (A ⊙ E)[S] · lora_alpha / init_r
(the PEFT adapter's lora_alpha is written so that this is our scale, whatever the scaling rule),
so LoRA's lora_A = (A ⊙ E)[S] and lora_B = B[:, S] give the same dW with LoRA's scale alpha' / r' when
r' = |S| and alpha' = lora_alpha · |S| / init_r. Two layouts:

- `save_lora_adapter`: per-module ranks in PEFT's `rank_pattern` / `alpha_pattern` (stock `peft`
  LoraConfig loads it). A module pruned to rank 0 adds nothing and is left out.
- `save_serving_adapter`: for engines with one global r and alpha and a few allowed ranks: the scale is
  folded into lora_B, every module is zero-padded to one rank the engine accepts (so each module type has
  one rank across layers, as TGI and LoRAX stack them), alpha = r (scale 1), and no module is dropped (a
  rank-0 module gets zero matrices).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "base_model.model."
# vLLM's --max-lora-rank takes these; TGI and LoRAX take any rank, so the same sizes suit them.
SERVING_RANKS = (8, 16, 32, 64, 128, 256, 512)


class AdapterLayout:
    """An AdaLoRA adapter in PEFT's form (adapter_config.json's dict and the safetensors' tensors): its config,
    its modules' LoRA factors, and the saved heads. export.save_peft_adapter returns the one it wrote, so the
    LoRA writers need not read it back; `read` takes one from a folder."""

    def __init__(self, config: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.config = config
        if self.config.get("peft_type") != "ADALORA":
            raise ValueError(f"a {self.config.get('peft_type')} adapter, not ADALORA")
        self.scale = self.config["lora_alpha"] / self.config["init_r"]
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # module -> (lora_A, lora_B), unscaled
        for name in self.config["target_modules"]:
            key = PREFIX + name
            a, e, b = tensors[key + ".lora_A"], tensors[key + ".lora_E"], tensors[key + ".lora_B"]
            self.factors[name] = (a * e, b)  # E is (rank, 1): it scales each row of A
        self.heads = {k: v for k, v in tensors.items() if ".lora_" not in k}

    @classmethod
    def read(cls, adapter_dir: str | Path) -> AdapterLayout:
        folder = Path(adapter_dir)
        config = json.loads((folder / "adapter_config.json").read_text())
        if config.get("peft_type") != "ADALORA":
            raise ValueError(f"{folder} is a {config.get('peft_type')} adapter, not ADALORA")
        return cls(config, load_file(str(folder / "adapter_model.safetensors")))

    def ranks(self) -> dict[str, int]:
        return {name: a.shape[0] for name, (a, _) in self.factors.items()}

    def base_config(self) -> dict:
        keep = ("task_type", "base_model_name_or_path", "lora_dropout", "fan_in_fan_out", "modules_to_save")
        return {**{k: self.config.get(k) for k in keep}, "peft_type": "LORA", "bias": "none", "use_rslora": False,
                "use_dora": False, "init_lora_weights": True, "inference_mode": True}


def _write(out_dir: str | Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def _layout(adapter: AdapterLayout | str | Path) -> AdapterLayout:
    return adapter if isinstance(adapter, AdapterLayout) else AdapterLayout.read(adapter)


def save_lora_adapter(adapter: AdapterLayout | str | Path, out_dir: str | Path) -> dict[str, int]:
    """Per-module ranks (rank_pattern, alpha_pattern); returns the rank of each module kept (none when all
    were pruned: then every module is written at rank 1 with zeros, the one exact LoRA PEFT loads)."""
    layout = _layout(adapter)
    ranks = {name: r for name, r in layout.ranks().items() if r > 0}
    if not ranks:  # every module pruned, dW = 0: PEFT takes no r=0, so rank 1 with zero factors (exact)
        config = {**layout.base_config(), "target_modules": sorted(layout.factors), "r": 1, "lora_alpha": 1,
                  "rank_pattern": {}, "alpha_pattern": {}}
        tensors = dict(layout.heads)  # a trained task head still counts
        for name, (a, b) in layout.factors.items():
            tensors[f"{PREFIX}{name}.lora_A.weight"] = torch.zeros(1, a.shape[1], dtype=a.dtype)
            tensors[f"{PREFIX}{name}.lora_B.weight"] = torch.zeros(b.shape[0], 1, dtype=b.dtype)
        _write(out_dir, config, tensors)
        return {}
    top = max(ranks.values())
    alpha = layout.config["lora_alpha"]
    config = {**layout.base_config(), "target_modules": sorted(ranks), "r": top,
              "lora_alpha": alpha * top / layout.config["init_r"],
              "rank_pattern": {name: r for name, r in ranks.items() if r != top},
              "alpha_pattern": {name: alpha * r / layout.config["init_r"] for name, r in ranks.items() if r != top}}
    tensors = dict(layout.heads)
    for name in ranks:
        a, b = layout.factors[name]
        tensors[f"{PREFIX}{name}.lora_A.weight"] = a
        tensors[f"{PREFIX}{name}.lora_B.weight"] = b
    _write(out_dir, config, tensors)
    return ranks


def serving_rank(largest: int, sizes: tuple[int, ...] = SERVING_RANKS) -> int:
    """The smallest allowed rank that holds `largest`."""
    fitting = [s for s in sorted(sizes) if s >= largest]
    if not fitting:
        raise ValueError(f"a module keeps rank {largest}, above the largest rank serving engines take ({max(sizes)})")
    return fitting[0]


def save_serving_adapter(adapter: AdapterLayout | str | Path, out_dir: str | Path,
                         sizes: tuple[int, ...] = SERVING_RANKS) -> int:
    """One global rank for every module (zero-padded), the scale folded into lora_B; returns that rank."""
    layout = _layout(adapter)
    rank = serving_rank(max(layout.ranks().values(), default=0), sizes)
    config = {**layout.base_config(), "target_modules": sorted(layout.factors), "r": rank, "lora_alpha": rank,
              "rank_pattern": {}, "alpha_pattern": {}}
    tensors = dict(layout.heads)
    for name, (a, b) in layout.factors.items():
        kept = a.shape[0]
        padded_a = torch.zeros(rank, a.shape[1], dtype=a.dtype)
        padded_b = torch.zeros(b.shape[0], rank, dtype=b.dtype)
        padded_a[:kept] = a
        padded_b[:, :kept] = b * layout.scale  # alpha = r: LoRA's own scale is 1
        tensors[f"{PREFIX}{name}.lora_A.weight"] = padded_a
        tensors[f"{PREFIX}{name}.lora_B.weight"] = padded_b
    _write(out_dir, config, tensors)
    return rank
