"""Loading transformers models for a task kind. The only place that knows transformers' Auto classes."""

from __future__ import annotations

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                          AutoModelForSequenceClassification, PreTrainedModel)

AUTO_CLASSES = {
    "sequence_classification": AutoModelForSequenceClassification,
    "causal_lm": AutoModelForCausalLM,
    "seq2seq": AutoModelForSeq2SeqLM,
}


def build_model(name_or_path: str, task: str, num_labels: int | None = None, *, empty: bool = False,
                dtype: torch.dtype | None = None, config_overrides: dict | None = None) -> PreTrainedModel:
    """A model for `task`; `empty=True` builds the architecture on the meta device without reading weights.

    Remote code is never trusted, and weights load only from safetensors (pickle files can run code).
    """
    if task not in AUTO_CLASSES:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(AUTO_CLASSES)}")
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    if task == "sequence_classification":
        if num_labels is not None:
            config.num_labels = num_labels
        if getattr(config, "pad_token_id", None) is None and getattr(config, "eos_token_id", None) is not None:
            config.pad_token_id = config.eos_token_id  # decoder classifiers find the last token by padding
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    auto = AUTO_CLASSES[task]
    if empty:
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=False)
    return auto.from_pretrained(name_or_path, config=config, dtype=dtype, trust_remote_code=False,
                                use_safetensors=True,
                                # a head of another size (a fine-tuned classifier) is replaced by a fresh one
                                ignore_mismatched_sizes=task == "sequence_classification")
