"""Causal LM examples: plain text packed into blocks, prompt/completion, and chat messages.

Labels are the input ids with IGNORE_INDEX where the model should not learn: the prompt, and in a chat
everything but the assistant turns (the model shifts labels by one position itself).
"""

from __future__ import annotations

import json

from service.dataset import Columns, DataError
from service.dataset.columns import ColumnMap, texts_of
from service.dataset.packing import end_token_id, pack_texts
from worker.data.encoding import IGNORE_INDEX, Encoded

# The Stanford Alpaca prompt, for instruction/input/output datasets without a chat template of their own.
ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
ALPACA_PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                            "further context. Write a response that appropriately completes the request.\n\n"
                            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")


def causal_lm_examples(tokenizer, columns: Columns, mapping: ColumnMap, max_len: int) -> Encoded:
    if mapping.layout == "text":
        return packed_blocks(tokenizer, texts_of(columns, mapping.roles["text"]), max_len)
    if mapping.layout == "chat":
        return chat_examples(tokenizer, columns[mapping.roles["messages"]], max_len)
    if mapping.layout == "alpaca":
        prompts, completions = alpaca_prompts(columns, mapping)
    else:
        prompts, completions = (texts_of(columns, mapping.roles["prompt"]),
                                texts_of(columns, mapping.roles["completion"]))
    return prompt_completion_examples(tokenizer, prompts, completions, max_len)


def packed_blocks(tokenizer, texts: list[str], block: int) -> Encoded:
    """The texts packed into blocks (service.dataset.packing), each trained on whole."""
    blocks, dropped = pack_texts(tokenizer, texts, block)
    return Encoded([{"input_ids": b, "labels": list(b)} for b in blocks], dropped=dropped)


def alpaca_prompts(columns: Columns, mapping: ColumnMap) -> tuple[list[str], list[str]]:
    instructions = texts_of(columns, mapping.roles["instruction"])
    inputs = columns[mapping.roles["input"]] if "input" in mapping.roles else [None] * len(instructions)
    prompts = [ALPACA_PROMPT_WITH_INPUT.format(instruction=i, input=x) if _has_input(x)
               else ALPACA_PROMPT.format(instruction=i) for i, x in zip(instructions, inputs)]
    return prompts, texts_of(columns, mapping.roles["output"])


def _has_input(value: object) -> bool:
    # Self-Instruct-derived sets (alpaca-libre) write "<noinput>" where Stanford Alpaca leaves it empty.
    return isinstance(value, str) and value.strip() not in ("", "<noinput>")


def prompt_completion_examples(tokenizer, prompts: list[str], completions: list[str], max_len: int) -> Encoded:
    """prompt + completion + eos; the loss covers the completion and eos only. Prompt and completion are
    tokenised separately so the boundary between them is exact."""
    end = end_token_id(tokenizer)
    prompt_ids = tokenizer(prompts, verbose=False)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False, verbose=False)["input_ids"]
    out = Encoded()
    for p, c in zip(prompt_ids, completion_ids):
        answer = c + ([end] if end is not None else [])
        _add(out, p + answer, [IGNORE_INDEX] * len(p) + answer, max_len)
    return out


def chat_examples(tokenizer, conversations: list, max_len: int) -> Encoded:
    """Each conversation through the tokenizer's chat template; the loss covers the assistant turns.

    An assistant turn's tokens are what rendering the conversation up to that turn adds to rendering it
    up to the turn before with the generation prompt (so the "assistant:" header itself is not learned).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the model's tokenizer has no chat template: use prompt/completion columns "
                        "(dataset.prompt_column and dataset.completion_column) instead of messages")
    out = Encoded()
    for row, raw in enumerate(conversations, start=1):
        messages = _messages(raw, row)
        ids = _render(tokenizer, messages, generation_prompt=False)
        labels = [IGNORE_INDEX] * len(ids)
        for turn, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = _render(tokenizer, messages[:turn], generation_prompt=True) if turn else []
            through = _render(tokenizer, messages[:turn + 1], generation_prompt=False)
            if through[:len(before)] != before or ids[:len(through)] != through:
                raise DataError(f"dataset row {row}: this tokenizer's chat template renders earlier turns "
                                "differently once later ones follow, so assistant turns cannot be located; "
                                "use prompt/completion columns instead")
            labels[len(before):len(through)] = through[len(before):]
        _add(out, ids, labels, max_len)
    return out


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=False)
    return list(ids)


def _messages(raw: object, row: int) -> list[dict]:
    if isinstance(raw, str):  # csv/tsv cells hold the list as JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in raw)):
        raise DataError(f"dataset row {row}: messages must be a non-empty list of {{\"role\": ..., "
                        "\"content\": \"text\"}} objects")
    if not any(m["role"] == "assistant" for m in raw):
        raise DataError(f"dataset row {row}: the conversation has no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in raw]


def _add(out: Encoded, ids: list[int], labels: list[int], max_len: int) -> None:
    if len(ids) > max_len:
        out.truncated += 1
        ids, labels = ids[:max_len], labels[:max_len]
    if all(y == IGNORE_INDEX for y in labels[1:]):  # the first label is never predicted
        out.dropped += 1
        return
    out.examples.append({"input_ids": ids, "labels": labels})
