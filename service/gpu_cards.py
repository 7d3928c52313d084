"""GPU cards a dry run checks a job's memory estimate against: memory as the driver reports it, and bf16."""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 2 ** 20
GIB = 2 ** 30


@dataclass(frozen=True)
class Card:
    name: str
    memory_bytes: int
    bf16: bool  # Ampere and newer; a base_dtype of auto trains in bf16 on these, in fp32 otherwise


CARDS = (
    Card("H200", 143_771 * MIB, True),
    Card("H100-80GB", 81_559 * MIB, True),
    Card("A100-80GB", 81_920 * MIB, True),
    Card("A100-40GB", 40_960 * MIB, True),
    Card("L40S", 46_068 * MIB, True),
    Card("A6000", 49_140 * MIB, True),
    Card("A10G", 23_028 * MIB, True),
    Card("L4", 23_034 * MIB, True),
    Card("RTX4090", 24_564 * MIB, True),
    Card("RTX3090", 24_576 * MIB, True),
    Card("V100-32GB", 32_768 * MIB, False),
    Card("V100-16GB", 16_160 * MIB, False),
    Card("T4", 15_360 * MIB, False),
)
_BY_KEY = {re.sub(r"[^a-z0-9]", "", c.name.lower()): c for c in CARDS}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*gi?b?\s*$", re.IGNORECASE)
MAX_CARD_GIB = 4096


def find_card(text: str) -> Card:
    """A card by name (case, spaces and dashes do not matter) or by size: `24GB` is 24 GiB, with bf16."""
    if (size := _SIZE.match(text)) is not None:
        gib = float(size.group(1))
        if not 0 < gib <= MAX_CARD_GIB:
            raise ValueError(f"gpu: {text[:40]!r}: a size must be above 0 and at most {MAX_CARD_GIB} GB")
        return Card(f"{gib:g}GB", round(gib * GIB), True)
    card = _BY_KEY.get(re.sub(r"[^a-z0-9]", "", text.lower()))
    if card is None:
        raise ValueError(f"gpu: {text[:40]!r} is not a card this server knows: name one of "
                         f"{', '.join(c.name for c in CARDS)}, or give its memory, e.g. \"24GB\"")
    return card
