"""Tiny models built from a config with fixed seeds, their data, and helpers shared by the core tests: fast
enough to train for real on a CPU."""

import torch
import transformers

from adalora_core import AdaLoraConfig, TrainArgs, build_model, train

# Ours scales by alpha / init_r, PEFT by alpha / (init_r + 1e-5): a 1e-6 relative gap, far below this.
LOGITS_ATOL = 1e-5


def tiny_bert(num_labels: int = 2, seed: int = 0) -> transformers.BertForSequenceClassification:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=num_labels)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def classification_data(n: int = 64, length: int = 8, seed: int = 0) -> list[dict]:
    """Label = whether token 7 occurs: learnable, so training measurably moves the logits."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(10, 100, (length,), generator=g)
        if i % 2:
            ids[int(torch.randint(0, length, (1,), generator=g))] = 7
        rows.append({"input_ids": ids, "labels": torch.tensor(i % 2)})
    return rows


def lm_data(n: int = 32, length: int = 12, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": (ids := torch.randint(0, 100, (length,), generator=g)), "labels": ids} for _ in range(n)]


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def trained_classifier(bert_dir, target_r=2.0):
    model = build_model(bert_dir, "sequence_classification")
    config = AdaLoraConfig(init_r=4, target_r=target_r, tinit=2, tfinal=3, delta_t=2)
    return train(model, config, TrainArgs(max_steps=16, batch_size=8, learning_rate=5e-2),
                 classification_data(), collate)


def set_values_and_grads(modules, seed):
    """Random values and gradients in every SVD triplet (A, E, B) of `modules`, as after a backward pass."""
    g = torch.Generator().manual_seed(seed)
    for m in modules.values():
        for p in (m.lora_A, m.lora_E, m.lora_B):
            p.data = torch.randn(p.shape, generator=g)
            p.grad = torch.randn(p.shape, generator=g)
