"""Peak training memory of a job, estimated before it runs, from the model's architecture alone.

The fixed part is counted: the frozen base weights in their dtype (4-bit NF4 packs two weights a byte plus
its block scales), and for every trainable parameter (adapters and heads, fp32) its value, its gradient and
AdamW's two moments, plus the allocator's two sensitivity averages per adapter parameter.

The activations are not guessed from a formula: one forward pass of the model on the meta device (shapes,
no data, no memory) at the job's batch size and sequence length records every tensor autograd saves for the
backward pass, counted once per storage. That follows the model's real code path (its attention, its norms
upcasting to fp32, the loss upcasting the logits), adapters included. Attention is counted as a fused SDPA
kernel keeps it (query, key, value, output and the softmax's log-sum-exp, no seq x seq matrix), as it runs
on a GPU. Gradient checkpointing keeps only each layer's input and recomputes one layer at a time in the
backward pass, so with it the activations are what is saved outside the layers, plus every layer's input,
plus the largest layer's own. The backward pass holds, beyond the saved tensors, the gradient of the largest
of them at once. A causal LM is traced through the training loss (adalora_core.objective: logits only at labelled
positions, a chunk of rows at a time), whose backward pass holds one chunk's fp32 logits and their gradient.

Approximations, stated: the trace runs the whole model in the compute dtype, as autocast would (adapters and
heads are bf16 in the trace under a bf16 base; their fp32 copies are in the fixed part). Batches are full
(batch_size x max_seq_len tokens; real batches are padded only to their longest row). Framework overhead
(the CUDA context, allocator fragmentation) is not in `peak`; `fits` leaves room for it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .inject import Adapted
from .objective import assume_lean_loss, chunk_rows, task_loss

GIB = 1024 ** 3
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 * (1 + 4 / 256)  # 4 bits; an 8-bit scale per 64 weights, fp32 per 256 scales
CUDA_CONTEXT_BYTES = GIB // 2                       # what the CUDA context and kernels take before any tensor
FRAGMENTATION = 0.10                                # the caching allocator's slack at the peak


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes at the peak of a training step. `activations` is with the job's checkpointing choice."""

    weights: int
    trainable: int
    gradients: int
    optimizer: int
    allocator: int
    activations: int
    backward: int
    gradient_checkpointing: bool
    activations_checkpointing_off: int
    activations_checkpointing_on: int | None  # None: the model has no layers to checkpoint

    @property
    def peak(self) -> int:
        return (self.weights + self.trainable + self.gradients + self.optimizer + self.allocator
                + self.activations + self.backward)

    def with_checkpointing(self, on: bool) -> MemoryEstimate:
        if on and self.activations_checkpointing_on is None:
            return self
        activations = self.activations_checkpointing_on if on else self.activations_checkpointing_off
        return MemoryEstimate(**{**asdict(self), "activations": activations, "gradient_checkpointing": on})

    def to_dict(self) -> dict:
        return {**asdict(self), "peak": self.peak}


def peak_tensor_bytes(run: Callable[[], object], device: str = "cpu") -> int:
    """The most tensor bytes alive at once while `run()` runs, to check an estimate against. On CUDA the
    allocator's max_memory_allocated; on the CPU the profiler's memory timeline (every tensor created and
    freed, those alive before included), summed in time order as its own export does. Neither counts the
    allocator's cache nor the process's other memory."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        run()
    live = peak = 0
    for _, action, (key, _version), size in prof._memory_profile().timeline:
        if key.device.type == "cpu" and action.name in ("PREEXISTING", "CREATE", "DESTROY"):
            live += -size if action.name == "DESTROY" else size
            peak = max(peak, live)
    return peak


def fits(peak: int, card_bytes: int) -> bool:
    """Whether a peak of `peak` tensor bytes fits a card of `card_bytes`, leaving room for the framework."""
    return peak * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES <= card_bytes


def checkpointing_needed(estimate: MemoryEstimate, device_bytes: int) -> tuple[bool, str]:
    """gradient_checkpointing "auto": on only when the step does not fit `device_bytes` without it (and the model
    has layers to checkpoint). Recomputation costs about a forward pass per step (a third of a step with a
    frozen base), so it is only worth paying for memory that is missing. Returns (on, why, in words)."""
    off = estimate.with_checkpointing(False).peak
    room = f"the device's {device_bytes / GIB:.1f} GiB"
    if fits(off, device_bytes):
        return False, f"the step's estimated peak of {off / GIB:.2f} GiB fits {room} without it"
    if estimate.activations_checkpointing_on is None:
        return False, f"the step's estimated peak of {off / GIB:.2f} GiB exceeds {room}, but the model has no " \
                      "layers to checkpoint"
    on = estimate.with_checkpointing(True).peak
    return True, f"the step's estimated peak of {off / GIB:.2f} GiB exceeds {room} without it ({on / GIB:.2f} " \
                 "GiB with it)"


def estimate_training_memory(adapted: Adapted, task: str, *, batch_size: int, seq_len: int, dtype: torch.dtype,
                             checkpointing: bool, quantized: bool = False, device: str = "cuda") -> MemoryEstimate:
    """For an adapted model on the meta device (build_model(..., empty=True), then inject_adalora). The model
    is cast to `dtype` for the trace: pass a throwaway one. `device` is where the job would train: its
    attention kernels decide what attention keeps (see FusedAttention)."""
    adapters, heads = _trainable(adapted)
    trainable = sum(p.numel() for p in adapters) + sum(p.numel() for p in heads)
    weights = base_weight_bytes(adapted, dtype, quantized)
    batch = meta_batch(adapted.model, task, batch_size, seq_len)
    backward_logits = 0
    if task == "causal_lm" and assume_lean_loss(adapted.model):
        # The training loss (adalora_core.objective): labelled positions only, one chunk of fp32 logits at a time;
        # the backward pass recomputes a chunk's logits and holds them with their gradient.
        batch["label_index"] = torch.arange(batch_size * (seq_len - 1), device="meta")
        vocabulary = adapted.model.get_output_embeddings().weight.shape[0]  # type: ignore[operator]
        backward_logits = 2 * 4 * min(chunk_rows(vocabulary), batch_size * (seq_len - 1)) * vocabulary
    trace = trace_saved_tensors(adapted.model.to(dtype), batch, fused_dropout=device != "cpu")
    return MemoryEstimate(
        weights=weights, trainable=4 * trainable, gradients=4 * trainable, optimizer=8 * trainable,
        allocator=8 * sum(p.numel() for p in adapters),
        activations=trace.checkpointed if checkpointing and trace.layers else trace.total,
        backward=max(trace.largest, backward_logits), gradient_checkpointing=checkpointing and bool(trace.layers),
        activations_checkpointing_off=trace.total,
        activations_checkpointing_on=trace.checkpointed if trace.layers else None)


def base_weight_bytes(adapted: Adapted, dtype: torch.dtype, quantized: bool) -> int:
    """The frozen weights in `dtype`; with `quantized`, the adapted linear layers' weights in NF4."""
    adapters, heads = _trainable(adapted)
    trainable = {id(p) for p in adapters + heads}
    size = torch.empty((), dtype=dtype).element_size()
    packed = _nf4_weights(adapted) if quantized else set()
    total = 0.0
    for p in adapted.model.parameters():
        if id(p) not in trainable:
            total += p.numel() * (NF4_BYTES_PER_WEIGHT if id(p) in packed else size)
    return round(total)


def _nf4_weights(adapted: Adapted) -> set[int]:
    """The weights a 4-bit load packs: every linear layer's (adapted or not) but the task heads' and lm_head's,
    which hf.nf4_loading keeps whole."""
    from transformers.pytorch_utils import Conv1D

    from .inject import HEAD_NAMES

    kept_whole = {*HEAD_NAMES, "lm_head"}  # matched by name component, as bitsandbytes' skip list is
    return {id(module.weight) for name, module in adapted.model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and not kept_whole & set(name.split("."))}


def _trainable(adapted: Adapted) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(adapter parameters, task-head parameters): what trains, in fp32, with AdamW."""
    adapters = [p for m in adapted.modules.values() for p in (m.lora_A, m.lora_E, m.lora_B)]
    ids = {id(p) for p in adapters}
    heads = [p for h in adapted.heads for p in adapted.model.get_submodule(h).parameters() if id(p) not in ids]
    return adapters, heads


def meta_batch(model: nn.Module, task: str, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    """A full batch of token ids for `task`. No attention mask: every row is seq_len long, and the masking
    code of some models reads a mask's values, which meta tensors do not have."""
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta")
    if task != "sequence_classification":  # causal_lm, seq2seq: a label per token (targets up to seq_len)
        return {"input_ids": ids, "labels": ids}
    regression = model.config.num_labels == 1  # type: ignore[union-attr]  # a transformers model's config
    labels = torch.zeros(batch_size, dtype=torch.float32 if regression else torch.long, device="meta")
    return {"input_ids": ids, "labels": labels}


@dataclass(frozen=True)
class SavedTensors:
    """What one forward pass saved for backward, in bytes."""

    outside: int            # saved outside the checkpointable layers (embeddings, final norm, head, loss)
    layers: list[int]       # saved inside each layer
    layer_inputs: list[int]  # each layer's input hidden states (what checkpointing keeps)
    largest: int            # the largest single saved tensor

    @property
    def total(self) -> int:
        return self.outside + sum(self.layers)

    @property
    def checkpointed(self) -> int:
        return self.outside + sum(self.layer_inputs) + max(self.layers, default=0)


def trace_saved_tensors(model: nn.Module, batch: dict[str, torch.Tensor], fused_dropout: bool = True) -> SavedTensors:
    """Runs the training loss of `batch` (objective.task_loss) on meta tensors and counts what autograd saves, by
    layer. `fused_dropout`: whether the attention kernels fuse attention dropout (CUDA's do; the CPU's fall back to
    the math path)."""
    layers = checkpoint_layers(model)
    # Weights autograd keeps (a linear layer saves its weight for the input's gradient) are already counted
    # in the fixed part: they are the model's own storage, not new memory.
    weights = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    owner: dict[int, int | None] = {}
    sizes: dict[int, int] = {}
    inputs = [0] * len(layers)
    current: list[int | None] = [None]
    kept: list[torch.Tensor] = []  # alive until the count is done, so no storage address is reused

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.append(t)
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in sizes and key not in weights:
            sizes[key], owner[key] = storage.nbytes(), current[0]
        return t

    def enter(index: int):
        def hook(_module, args, kwargs):
            hidden = args[0] if args else next(iter(kwargs.values()))
            inputs[index] = hidden.numel() * hidden.element_size()
            current[0] = index
        return hook

    def leave(_module, _args, _output):
        current[0] = None

    with ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.callback(layer.register_forward_pre_hook(enter(i), with_kwargs=True).remove)
            stack.callback(layer.register_forward_hook(leave).remove)
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
        stack.enter_context(FusedAttention(pack, fused_dropout))
        for module in model.modules():  # a padding warning that reads token values, which meta tensors lack
            if hasattr(module, "warn_if_padding_and_no_attention_mask"):
                setattr(module, "warn_if_padding_and_no_attention_mask", lambda *args: None)  # noqa: B010
                stack.callback(delattr, module, "warn_if_padding_and_no_attention_mask")
        was_training = model.training
        model.train()
        try:
            task_loss(model, batch)
        finally:
            model.train(was_training)
    per_layer = [0] * len(layers)
    outside = 0
    for key, size in sizes.items():
        if (index := owner[key]) is None:
            outside += size
        else:
            per_layer[index] += size
    return SavedTensors(outside=outside, layers=per_layer, layer_inputs=inputs, largest=max(sizes.values(), default=0))


def checkpoint_layers(model: nn.Module) -> list[nn.Module]:
    """The blocks gradient checkpointing wraps: transformers marks them; else the longest ModuleList."""
    marked: list[nn.Module] = []
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # older transformers
        pass
    else:
        marked = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if marked:
        return marked
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        return []
    longest = max(lists, key=len)  # on its own line: inside list(...) mypy infers max's type from list's
    return list(longest)


class FusedAttention(TorchFunctionMode):
    """scaled_dot_product_attention as a fused kernel (flash, memory-efficient) runs it on a GPU: it saves
    query, key, value, the output and a log-sum-exp per row, never the seq x seq scores. On meta tensors the
    call would otherwise decompose into the math path and count those scores, which is what a CPU does with
    attention dropout (its fused kernel has none): `fused_dropout=False` counts that case so."""

    def __init__(self, pack, fused_dropout: bool = True) -> None:
        super().__init__()
        self.pack = pack
        self.fused_dropout = fused_dropout

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        dropout = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
        if dropout and not self.fused_dropout:
            return func(*args, **kwargs)
        query, key, value = args[:3]
        out = torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)
        logsumexp = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
        for t in (query, key, value, out, logsumexp):
            self.pack(t)
        return out.requires_grad_(query.requires_grad or key.requires_grad or value.requires_grad)
