"""Tiny models built from a config with fixed seeds: fast enough to train for real on a CPU."""

import torch
import transformers


def tiny_bert(num_labels: int = 2, seed: int = 0) -> transformers.BertForSequenceClassification:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=num_labels)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


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
