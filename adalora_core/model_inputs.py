"""What a collated batch hands a model's forward, so that attention can run on its fastest kernel.

A decoder-only causal LM needs no 2-D attention mask for right-padded rows whose padding carries no labels: causal
attention never looks right, so the real tokens see exactly what they would see with the mask, and what the padding
sees is never scored. Passing the mask anyway sends PyTorch's SDPA down its masked path instead of the flash kernel.
Without a mask, transformers reads packed rows (position_ids restarting at 0 where an example starts) from the
position_ids and keeps attention inside each example; padding at a row's end has position 0, so each pad token is
an example of its own and sees only itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel

IGNORE_INDEX = -100  # the label that transformers' losses skip


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device | str,
                 label_index: bool = False) -> dict[str, Any]:
    """`batch` (as collated, on the CPU: read here without a device sync) as keyword arguments of `model`'s forward,
    on `device`. For a decoder-only causal LM: no KV cache (training has no use for one, and transformers looks
    for packed rows only without one) and no attention mask where it is redundant (see the module). Every other
    model and batch goes through unchanged. `label_index`: for adalora_core.objective.task_loss, add the labelled
    positions of a causal LM's batch, found here on the CPU."""
    inputs: dict[str, Any] = dict(batch)
    if decoder_only_lm(model):
        inputs["use_cache"] = False
        if _mask_is_redundant(batch):
            del inputs["attention_mask"]
            if "position_ids" in inputs and "flash" in (getattr(model.config, "_attn_implementation", None) or ""):
                inputs = _one_row(inputs)
        if label_index and "labels" in inputs:
            inputs["label_index"] = labelled_positions(inputs["labels"])
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """Flat indices into (rows x (length - 1)) of the positions whose next token has a label, from CPU labels."""
    return (labels[:, 1:] != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)


def keeps_packed_examples_apart(model: PreTrainedModel) -> bool:
    """Whether packed rows, handed over by model_inputs, keep each example's outputs independent of the examples
    before it in its row. Models whose mask ignores position_ids (OPT, BLOOM and MPT in transformers 5) let them
    see each other. Checked by gradient, which is exactly zero across examples whose attention is kept apart."""
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids),
             "position_ids": torch.tensor([[0, 1, 0, 1, 2], [0, 1, 2, 0, 1]])}  # two rows: flash needs one
    inputs = model_inputs(model, batch, next(model.parameters()).device)
    embeds = model.get_input_embeddings()(inputs.pop("input_ids")).detach().requires_grad_()
    with torch.enable_grad():
        logits = model(inputs_embeds=embeds, **inputs).logits.view(2, 5, -1)
        (grad,) = torch.autograd.grad(logits[0, 2:].sum() + logits[1, 3:].sum(), embeds)
    grad = grad.view(2, 5, -1)
    return bool((grad[0, :2] == 0).all() and (grad[1, :3] == 0).all())


def decoder_only_lm(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return (isinstance(model, GenerationMixin) and not getattr(config, "is_encoder_decoder", False)
            and getattr(config, "is_causal", True))  # is_causal False: a decoder made bidirectional


def _mask_is_redundant(batch: dict[str, torch.Tensor]) -> bool:
    """A 2-D mask whose every row is ones then zeros, over labels that ignore every masked position. Left padding
    or holes would let real tokens see padding; a label on padding would score what padding sees."""
    mask, labels = batch.get("attention_mask"), batch.get("labels")
    if mask is None or mask.dim() != 2 or labels is None or labels.shape != mask.shape:
        return False
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    return right_padded and bool((labels[mask == 0] == IGNORE_INDEX).all())


def _one_row(inputs: dict[str, Any]) -> dict[str, Any]:
    """The rows end to end: flash kernels take packed examples from position_ids only in a single row (transformers'
    _is_packed_sequence). Each row's first label is ignored, as it would be predicted from the previous row's last
    token; in its own row nothing predicts it, so the loss is the same."""
    labels = inputs["labels"].clone()
    labels[:, 0] = IGNORE_INDEX
    return {k: v.reshape(1, -1) if isinstance(v, torch.Tensor) else v for k, v in {**inputs, "labels": labels}.items()}
