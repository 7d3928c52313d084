"""Loading transformers models for a task kind. The only place that knows transformers' Auto classes."""

from __future__ import annotations

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)

AUTO_CLASSES = {
    "sequence_classification": AutoModelForSequenceClassification,
    "causal_lm": AutoModelForCausalLM,
    "seq2seq": AutoModelForSeq2SeqLM,
}
# What to use instead, when a model's architecture has no class for the task.
TASK_MODELS = {"sequence_classification": "a model with a sequence classification head (BERT, RoBERTa, ...)",
               "causal_lm": "a decoder model (GPT-2, Llama, Qwen, ...)",
               "seq2seq": "an encoder-decoder model (T5, BART, ...)"}


BASE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def base_dtype(name: str, device: torch.device) -> torch.dtype:
    """The frozen base model's dtype: `auto` is bf16 on a GPU that supports it, else fp32."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in BASE_DTYPES:
        raise ValueError(f"base dtype {name!r}: use auto, bf16 or fp32 (fp16 needs loss scaling, which the "
                         "training loop does not do: use bf16 on GPUs that have it, else fp32)")
    return BASE_DTYPES[name]


def enable_gradient_checkpointing(model: PreTrainedModel) -> bool:
    """Recompute each layer's activations in the backward pass instead of keeping them; False when the
    architecture does not support it. Non-reentrant, so it works with frozen inputs and adapters inside."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a KV cache is useless in training and conflicts with recomputation
    return True


def parameter_count(model: torch.nn.Module) -> int:
    """The model's parameters as its architecture counts them: a packed 4-bit weight holds two per byte, so
    it is counted by the shape in its quant_state, not by its numel."""
    def count(p: torch.nn.Parameter) -> int:
        state = getattr(p, "quant_state", None)
        return state.shape.numel() if state is not None else p.numel()
    return sum(count(p) for p in model.parameters())


def nf4_loading(dtype: torch.dtype, device: torch.device | str) -> dict:
    """from_pretrained's options for a 4-bit NF4 base (double quantization, as QLoRA): task heads stay whole."""
    from importlib.util import find_spec

    from transformers import BitsAndBytesConfig

    from .inject import HEAD_NAMES

    if find_spec("bitsandbytes") is None:  # checked here: transformers' own message names no install
        raise ValueError("4-bit NF4 needs bitsandbytes on the worker: pip install bitsandbytes")

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=[*HEAD_NAMES, "lm_head"])
    return {"quantization_config": config, "device_map": {"": str(torch.device(device))}}


class UnsupportedTask(ValueError):
    """The model's architecture has no transformers class for the task (a BERT for seq2seq)."""

    def __init__(self, name: str, model_type: str, task: str) -> None:
        self.model_type, self.task = model_type, task
        super().__init__(self.describe(name))

    def describe(self, name: str) -> str:
        """The message, naming the model as the user knows it (not a server path it was resolved to)."""
        return (f"{name!r} is a {self.model_type} model, which has no {self.task} form in transformers; "
                f"use {TASK_MODELS[self.task]}")


def build_model(name_or_path: str, task: str, num_labels: int | None = None, *, empty: bool = False,
                dtype: torch.dtype | None = None, config_overrides: dict | None = None,
                quantization: str | None = None, device: torch.device | str | None = None) -> PreTrainedModel:
    """A model for `task`; `empty=True` builds the architecture on the meta device without reading weights.
    `quantization="nf4"` loads the linear layers as bitsandbytes 4-bit NF4 on `device` (QLoRA's base), the
    task heads and the rest in `dtype`, which is also the compute dtype.

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
    if type(config) not in auto._model_mapping:  # type: ignore[operator]  # set by each auto class; checked here so the error names the fix, not a class list
        raise UnsupportedTask(name_or_path, config.model_type, task)
    if empty:
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=False)
    extra = {} if quantization is None else nf4_loading(dtype or torch.float32, device or "cpu")
    return auto.from_pretrained(name_or_path, config=config, dtype=dtype, trust_remote_code=False,
                                use_safetensors=True, **extra,
                                # a head of another size (a fine-tuned classifier) is replaced by a fresh one
                                ignore_mismatched_sizes=task == "sequence_classification")
