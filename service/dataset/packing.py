"""The tokenizer rules the API's dry run and the worker share. A tokenizer is passed in (transformers'
interface, duck-typed): nothing here imports torch or transformers.

Plain text for causal LM is packed into blocks, so its number of examples is known only by packing it: the
dry run counts the blocks with pack_texts, the worker trains on them.
"""

from __future__ import annotations

from service.dataset import DataError


def end_token_id(tokenizer) -> int | None:
    """The token that ends a document or an answer: eos, or [SEP] for BERT-style vocabularies."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def require_vocabulary(tokenizer, model: str) -> None:
    """transformers builds an empty tokenizer, rather than failing, for a model folder without tokenizer
    files: every text would then encode to nothing (or to one end token), and training would learn nothing."""
    if tokenizer.vocab_size == 0:
        raise DataError(f"model {model!r}: its tokenizer has no vocabulary (no tokenizer files beside the "
                        "model's config); add the files of the tokenizer it was trained with")


def pack_texts(tokenizer, texts: list[str], block: int) -> tuple[list[list[int]], int]:
    """(blocks of token ids, texts dropped for being blank): all non-blank texts as one token stream (each
    ended by the end token), cut into blocks of `block` tokens, so no token is padding or cut away."""
    kept = [t for t in texts if t.strip()]
    end = end_token_id(tokenizer)
    stream: list[int] = []
    for ids in tokenizer(kept, verbose=False)["input_ids"]:
        stream += ids if end is None or (ids and ids[-1] == end) else [*ids, end]
    blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    # A block of one token has no next token to predict.
    return [b for b in blocks if len(b) > 1], len(texts) - len(kept)
