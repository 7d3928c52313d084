"""training.compile: torch.compile on each decoder layer.

Layer by layer rather than the whole model: every layer of a decoder is the same code, so one compiled graph
serves them all (one compile, not one per layer), and the parts that do not trace well (the model's mask
building, the loss, the allocator's in-place edits between steps) stay eager. Compiling costs seconds to
minutes at the start of a run, so "auto" spends it only where it is paid back: on a GPU, over a run long
enough, on weights torch can trace (not bitsandbytes' 4-bit ones).
"""

from __future__ import annotations

from torch import nn

from .config import COMPILE_AUTO_MIN_STEPS
from .layer import is_quantized
from .memory import checkpoint_layers


def compile_choice(setting: bool | str, device_type: str, total_steps: int, model: nn.Module) -> tuple[bool, str]:
    """(on, why) for TrainArgs.compile (true, false or "auto")."""
    layers = checkpoint_layers(model)
    if not layers:
        return False, "the model has no repeated layers to compile"
    if setting != "auto":
        return bool(setting), f"compile is {str(setting).lower()}"
    if device_type != "cuda":
        return False, "auto: compiling pays off on a GPU only"
    if any(is_quantized(m) for m in model.modules()):
        return False, "auto: 4-bit weights do not compile"
    if total_steps < COMPILE_AUTO_MIN_STEPS:
        return False, f"auto: {total_steps} steps are too few to repay compiling (it needs {COMPILE_AUTO_MIN_STEPS})"
    return True, f"auto: a GPU run of {total_steps} steps"


def compile_layers(model: nn.Module) -> int:
    """Compiles each decoder layer in place (nn.Module.compile keeps names and state dicts unchanged); returns how
    many. Shapes vary from batch to batch, so they are compiled as dynamic from the start."""
    layers = checkpoint_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
