"""Where an adapted module sits in a transformer, read from its name: the stack (encoder/decoder), the layer
and the module type (query, key, value, attention output; FFN in and out), so rank charts can group them.
Covers the naming of BERT-likes, DistilBERT, DeBERTa, GPT-2, LLaMA-likes, T5 and BART; anything else is
type "other" in its layer."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The module's last name part -> its type. Parts that mean different things in attention and in the FFN
# ("dense", GPT-2's "c_proj") are decided by what precedes them (below).
TYPES = {
    **dict.fromkeys(("query", "q", "q_proj", "q_lin", "query_proj"), "query"),
    **dict.fromkeys(("key", "k", "k_proj", "k_lin", "key_proj"), "key"),
    **dict.fromkeys(("value", "v", "v_proj", "v_lin", "value_proj"), "value"),
    "c_attn": "qkv", "query_key_value": "qkv", "qkv_proj": "qkv", "Wqkv": "qkv",
    **dict.fromkeys(("o", "o_proj", "out_proj", "out_lin"), "output"),
    **dict.fromkeys(("gate_proj", "up_proj", "wi", "wi_0", "wi_1", "fc1", "c_fc", "lin1", "w1", "w3",
                     "dense_h_to_4h", "gate_up_proj"), "ffn_in"),
    **dict.fromkeys(("down_proj", "wo", "fc2", "lin2", "w2", "dense_4h_to_h"), "ffn_out"),
}
ORDER = ("query", "key", "value", "qkv", "output", "ffn_in", "ffn_out", "other")
ATTENTION_PARTS = {"attention", "attn", "self_attn", "selfattention", "encdecattention", "self_attention",
                   "encoder_attn", "crossattention"}
LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class ModulePlace:
    name: str
    stack: str | None   # "encoder" or "decoder" when the name says (BERT's one stack is `encoder` too)
    layer: int | None
    type: str           # one of ORDER
    kind: str           # "attention", "ffn" or "other"


def module_type(parts: list[str]) -> str:
    last = parts[-1]
    in_attention = any(p.lower() in ATTENTION_PARTS for p in parts[:-1])
    if last == "c_proj":  # GPT-2: attn.c_proj is the attention output, mlp.c_proj the FFN's
        return "output" if in_attention else "ffn_out"
    if last == "dense":   # BERT: attention.output.dense, intermediate.dense, output.dense
        if in_attention:
            return "output"
        return {"intermediate": "ffn_in", "output": "ffn_out"}.get(parts[-2], "other")
    return TYPES.get(last, "other")


def place(name: str) -> ModulePlace:
    parts = name.split(".")
    type_ = module_type(parts)
    kind = "attention" if type_ in ORDER[:5] else "ffn" if type_.startswith("ffn") else "other"
    stack = "decoder" if "decoder" in parts else "encoder" if "encoder" in parts else None
    layer = LAYER.search(f".{name}.")
    return ModulePlace(name, stack, int(layer.group(1)) if layer else None, type_, kind)


def ordered(names: list[str]) -> list[ModulePlace]:
    """The modules by stack (encoder first), layer, then type in ORDER, then name."""
    places = [place(n) for n in names]
    return sorted(places, key=lambda p: ({None: 0, "encoder": 0, "decoder": 1}[p.stack],
                                         -1 if p.layer is None else p.layer, ORDER.index(p.type), p.name))
