"""The eval_fn the training loop calls: loss plus the scores of the task kind.

classification: loss, accuracy, f1 (macro), mcc   regression: loss (MSE), pearson, spearman
causal_lm / seq2seq: loss per target token, perplexity
seq2seq, given the tokenizer: also ROUGE-1/2/L F1 of greedy generations for the first ROUGE_EXAMPLES
validation examples (rouge_examples says how many were scored)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from adalora_core.model_inputs import model_inputs
from adalora_core.objective import task_loss
from worker.data import metrics
from worker.data.encoding import IGNORE_INDEX

# Generating is what makes a seq2seq eval slow (a decoder pass per new token), so ROUGE scores a fixed
# sample: the first 64 validation examples, decoded greedily no further than their longest reference.
ROUGE_EXAMPLES = 64


def make_eval_fn(kind: str, validation: list[dict], collate: Callable, batch_size: int,
                 num_labels: int | None = None, tokenizer=None) -> Callable[[nn.Module], dict[str, float]] | None:
    """None without validation data. `kind` is PreparedData.kind; `tokenizer` decodes seq2seq generations
    for ROUGE (without it, seq2seq reports loss and perplexity only)."""
    if not validation:
        return None
    batches = _batches(validation, collate, batch_size)
    if kind == "seq2seq" and tokenizer is not None:
        sample = _by_length(validation[:ROUGE_EXAMPLES])
        sources = _batches([{"input_ids": e["input_ids"]} for e in sample], collate, batch_size)
        references = tokenizer.batch_decode([e["labels"] for e in sample], skip_special_tokens=True)
        max_new_tokens = max(len(e["labels"]) for e in sample)
        return lambda model: {**_token_loss(model, batches, shifted=False),
                              **_rouge(model, sources, references, max_new_tokens, tokenizer)}
    if kind in ("causal_lm", "seq2seq"):
        return lambda model: _token_loss(model, batches, shifted=kind == "causal_lm")
    return lambda model: _label_scores(model, batches, kind, num_labels)


def _batches(examples: list[dict], collate: Callable, batch_size: int) -> list[dict]:
    ordered = _by_length(examples)  # a stable sort: sorted input (the ROUGE sample) keeps its order
    return [collate(ordered[i:i + batch_size]) for i in range(0, len(ordered), batch_size)]


def _by_length(examples: list[dict]) -> list[dict]:
    """Similar lengths together: less padding, same result."""
    return sorted(examples, key=lambda e: len(e["input_ids"]))


def _token_loss(model: nn.Module, batches: list[dict], shifted: bool) -> dict[str, float]:
    """The model's mean loss per target token over the whole set (batches weighted by their tokens), summed on the
    device and read once: a read per batch would wait for the device every time."""
    device = next(model.parameters()).device
    loss_sum, tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in batches:
        labels = batch["labels"][:, 1:] if shifted else batch["labels"]  # causal LMs predict the next token
        n = int((labels != IGNORE_INDEX).sum())  # on the CPU
        if n:
            loss_sum += task_loss(model, model_inputs(model, batch, device, label_index=True)).double() * n
            tokens += n
    loss = loss_sum.item() / max(1, tokens)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def _rouge(model: nn.Module, sources: list[dict], references: list[str], max_new_tokens: int,
           tokenizer) -> dict[str, float]:
    device = next(model.parameters()).device
    predictions = []
    for batch in sources:
        generated = model.generate(input_ids=batch["input_ids"].to(device),
                                   attention_mask=batch["attention_mask"].to(device),
                                   max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
        predictions += tokenizer.batch_decode(generated, skip_special_tokens=True)
    return {**metrics.rouge(references, predictions), "rouge_examples": float(len(references))}


def _label_scores(model: nn.Module, batches: list[dict], kind: str, num_labels: int | None) -> dict[str, float]:
    device = next(model.parameters()).device
    losses, outputs, golds = [], [], []
    for batch in batches:  # kept on the device and read once at the end
        out = model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()})
        losses.append(out.loss.float() * batch["labels"].shape[0])
        outputs.append(out.logits.float())
        golds.append(batch["labels"])
    logits, gold = torch.cat(outputs).cpu(), torch.cat(golds).numpy()
    scores = {"loss": float(torch.stack(losses).sum()) / len(gold)}
    if kind == "regression":
        predicted = logits.squeeze(-1).numpy().astype(np.float64)
        return {**scores, "pearson": metrics.pearson(predicted, gold.astype(np.float64)),
                "spearman": metrics.spearman(predicted, gold.astype(np.float64))}
    predicted = logits.argmax(-1).numpy()
    n = num_labels or logits.shape[-1]
    return {**scores, "accuracy": metrics.accuracy(gold, predicted), "f1": metrics.macro_f1(gold, predicted, n),
            "mcc": metrics.matthews(gold, predicted, n)}
