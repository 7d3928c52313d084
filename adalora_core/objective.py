"""The training loss: model(**inputs).loss, computed leaner for decoder-only causal LMs.

A causal LM's own loss takes the logits of every position (prompt and padding included) over the whole
vocabulary, in fp32: for a 128k vocabulary at 8 x 1024 tokens, 4.2 GB per copy, and the backward pass holds two or
three copies. Here the final hidden states are taken from the model's backbone, only the positions that have a
label are kept (their indices found on the CPU, so no device sync), and the head and cross-entropy run a chunk of
rows at a time under activation checkpointing: at most one chunk's fp32 logits exist at once, in the forward and
in the backward pass. Same loss as the model's (mean over labelled tokens of the next-token cross-entropy).

Whether a model's loss is exactly "head, then cross-entropy" (some scale or soft-cap their logits) is not read
from its config: `enable_lean_loss` compares the two on a small batch once and keeps the model's own loss
otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from .layer import is_quantized
from .model_inputs import IGNORE_INDEX, decoder_only_lm, model_inputs

# fp32 logits one chunk may hold: rows per chunk = this / (vocabulary x 4 bytes); 2048 rows at a 32k vocabulary.
CHUNK_LOGIT_BYTES = 256 * 2**20
_LEAN = "_adalora_lean_loss"  # set on the model by enable_lean_loss


def task_loss(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """The loss of `inputs` (model_inputs(..., label_index=True) or plain keyword arguments)."""
    inputs = dict(inputs)
    index = inputs.pop("label_index", None)
    if index is None or not getattr(model, _LEAN, False):
        return model(**inputs).loss
    return _lean_loss(model, inputs, index)


class TrainingLoss(nn.Module):
    """task_loss as a module, so that DistributedDataParallel can wrap it (its parameters are the model's)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Any) -> torch.Tensor:
        return task_loss(self.model, inputs)


def enable_lean_loss(model: PreTrainedModel) -> bool:
    """Turns the lean loss on for `model` when it is a decoder-only LM with a plain linear head and the lean loss
    equals the model's own on a small batch; returns whether it did."""
    setattr(model, _LEAN, False)
    if not lean_loss_possible(model):
        return False
    device = next(model.parameters()).device
    ids = torch.arange(2, 18).view(2, 8) % model.config.vocab_size
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX  # a prompt
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = model_inputs(model, batch, device, label_index=True)
            theirs = task_loss(model, inputs)
            ours = _lean_loss(model, {k: v for k, v in inputs.items() if k != "label_index"}, inputs["label_index"])
    finally:
        model.train(was_training)
    same = bool(torch.isclose(ours.float(), theirs.float(), rtol=1e-3, atol=1e-4))
    setattr(model, _LEAN, same)
    return same


def lean_loss_possible(model: nn.Module) -> bool:
    """The structure the lean loss needs: a decoder-only LM, a backbone, and a plain (not 4-bit) linear head."""
    head = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    return (decoder_only_lm(model) and isinstance(head, nn.Linear) and not is_quantized(head)
            and getattr(model, "base_model", model) is not model)


def assume_lean_loss(model: nn.Module) -> bool:
    """For a model on the meta device (the memory estimate), where no numbers can be compared: the lean loss
    wherever its structure allows, as enable_lean_loss finds for the models that compute logits plainly."""
    possible = lean_loss_possible(model)
    setattr(model, _LEAN, possible)
    return possible


def chunk_rows(vocabulary: int) -> int:
    """Rows of logits one chunk computes (CHUNK_LOGIT_BYTES of fp32)."""
    return max(1, CHUNK_LOGIT_BYTES // (4 * vocabulary))


def _lean_loss(model: nn.Module, inputs: dict[str, Any], index: torch.Tensor) -> torch.Tensor:
    labels = inputs.pop("labels")
    hidden = model.base_model(**inputs).last_hidden_state  # type: ignore[operator]  # a transformers backbone
    rows = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, index)
    targets = labels[:, 1:].reshape(-1).index_select(0, index)
    head = model.get_output_embeddings()  # type: ignore[operator]
    return chunked_cross_entropy(rows, head.weight, head.bias, targets)


def chunked_cross_entropy(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          targets: torch.Tensor) -> torch.Tensor:
    """mean cross-entropy of softmax(rows @ weight.T + bias) against targets, a chunk of rows at a time; each chunk's
    logits are recomputed in the backward pass rather than kept."""
    n = rows.shape[0]  # a shape, known on the host
    if n == 0:
        return rows.sum() * 0.0  # nothing to learn from: a zero that still reaches the graph
    chunk = chunk_rows(weight.shape[0])
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        total = total + checkpoint(_chunk_loss, rows[start:start + chunk], weight, bias, targets[start:start + chunk],
                                   use_reentrant=False)
    return total / n


def _chunk_loss(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(rows, weight, bias).float(), targets, reduction="sum")
