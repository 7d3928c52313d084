"""The three task kinds on tiny models: column mapping, labels, masks, metrics, the tokenised-data cache,
and whole jobs through the runner (no Celery) whose exports load in stock transformers and peft.

Runs on SQLite only: nothing here depends on the database backend, and every job costs seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.dataset import DataError
from service.jobspec import JobSpec
from tests.conftest import (
    CHAT_TEMPLATE,
    FILLER,
    NEGATIVE,
    POSITIVE,
    sentiment_rows,
    sqlite_only_database_url,
)
from tests.helpers import new_job
from tests.worker.helpers import extract, finished, spec, succeeded, write_jsonl
from worker.data import IGNORE_INDEX, length_grouped_order, make_collate, make_eval_fn, map_columns, metrics, prepare
from worker.runner import claim_and_run

database_url = sqlite_only_database_url()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# -- metrics ----------------------------------------------------------------------------------------

def test_class_scores_match_hand_computed_values():
    gold, pred = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    assert metrics.accuracy(gold, pred) == pytest.approx(4 / 6)
    # per-class F1: 2·tp / (actual + predicted) = 2/4, 4/5, 2/3
    assert metrics.macro_f1(gold, pred, 3) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # binary MCC against its textbook formula (tp·tn − fp·fn) / sqrt(...)
    g, p = np.array([1, 1, 1, 0, 0, 0, 0]), np.array([1, 1, 0, 0, 0, 1, 0])
    tp, tn, fp, fn = 2, 3, 1, 1
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews(g, p, 2) == pytest.approx(expected)
    assert metrics.matthews(g, np.zeros(7, dtype=int), 2) == 0.0  # one predicted class: defined as 0


def test_correlations_handle_ties_like_rankdata():
    x, y = np.array([1.0, 2.0, 2.0, 3.0, 5.0]), np.array([2.0, 1.0, 4.0, 4.0, 9.0])
    assert metrics.ranks(x).tolist() == [1, 2.5, 2.5, 4, 5]
    assert metrics.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert metrics.spearman(x, y) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4, 5], [2, 1, 3.5, 3.5, 5])[0, 1])
    assert metrics.spearman(x, x ** 3) == pytest.approx(1.0) and metrics.pearson(x, np.ones(5)) == 0.0


def test_rouge_matches_hand_counted_overlaps():
    same = metrics.rouge(["The cat sat."], ["the cat sat"])  # case and punctuation are not words
    assert same == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert metrics.rouge(["good film"], ["dull plot"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # reference "the cat sat on the mat", prediction "the cat lay on a mat", 6 words each:
    # unigrams the, cat, on, mat match (the reference's second "the" has no partner): F1 = 2·4 / (6 + 6);
    # bigrams: only "the cat" of 5 each: 2·1 / (5 + 5); LCS "the cat on mat" = 4: 2·4 / (6 + 6)
    worked = metrics.rouge(["the cat sat on the mat"], ["the cat lay on a mat"])
    assert worked == pytest.approx({"rouge1": 2 / 3, "rouge2": 0.2, "rougeL": 2 / 3})
    # word order matters to ROUGE-2 and ROUGE-L only; scores average over the pairs
    swapped = metrics.rouge(["good film", "a b c d"], ["film good", "a b c d"])
    assert swapped == pytest.approx({"rouge1": 1.0, "rouge2": 0.5, "rougeL": (2 * 1 / 4 + 1) / 2})
    assert metrics.rouge([""], ["anything"])["rouge1"] == 0.0  # nothing to match: 0, not a division by zero
    assert metrics.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example (CLRS)


# -- column mapping ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "columns", "layout", "roles"), [
    ("sequence_classification", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],  # MRPC
     "pair", {"text": "#1 String", "text_pair": "#2 String", "label": "Quality"}),
    ("sequence_classification", ["index", "question", "sentence", "label"],  # QNLI
     "pair", {"text": "question", "text_pair": "sentence", "label": "label"}),
    ("sequence_classification", ["index", "genre", "sentence1", "sentence2", "score"],  # STS-B
     "pair", {"text": "sentence1", "text_pair": "sentence2", "label": "score"}),
    ("causal_lm", ["id", "messages"], "chat", {"messages": "messages"}),
    ("causal_lm", ["prompt", "completion"], "prompt_completion", {"prompt": "prompt", "completion": "completion"}),
    ("causal_lm", ["instruction", "input", "output"], "alpaca",
     {"instruction": "instruction", "output": "output", "input": "input"}),
    ("causal_lm", ["Text"], "text", {"text": "Text"}),
    ("seq2seq", ["id", "document", "summary"], "source_target", {"source": "document", "target": "summary"}),
])
def test_columns_are_found_by_common_names(data_dir, task, columns, layout, roles):
    job = JobSpec.model_validate(spec(task, "sentiment.csv"))
    mapping = map_columns(job, {name: ["x"] for name in columns})
    assert (mapping.layout, mapping.roles) == (layout, roles)


def test_an_explicit_mapping_wins_over_common_names(data_dir):
    columns = {name: ["x"] for name in ("prompt", "completion", "q", "a", "text", "other")}
    job = JobSpec.model_validate(spec("causal_lm", "sentiment.csv",
                                      dataset={"prompt_column": "q", "completion_column": "a"}))
    assert map_columns(job, columns).roles == {"prompt": "q", "completion": "a"}
    job = JobSpec.model_validate(spec("seq2seq", "sentiment.csv", dataset={"source_column": "q", "target_column": "a"}))
    assert map_columns(job, {**columns, "source": ["x"], "target": ["y"]}).roles == {"source": "q", "target": "a"}
    job = JobSpec.model_validate(spec("causal_lm", "sentiment.csv", dataset={"messages_column": "missing"}))
    with pytest.raises(DataError, match="dataset.messages_column: no column 'missing'"):
        map_columns(job, columns)


# -- examples per task kind -------------------------------------------------------------------------

def test_prompt_completion_learns_the_completion_only(data_dir, tokenizer):
    rows = [{"prompt": "the film was", "completion": "good"}, {"prompt": "the plot", "completion": "was very bad"}]
    data = prepare(JobSpec.model_validate(spec("causal_lm", write_jsonl(data_dir, rows),
                                               dataset={"validation_split": 0})), tokenizer)
    batch = make_collate(tokenizer.pad_token_id)(data.train)
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        learned = tokenizer.decode(ids[labels != IGNORE_INDEX])
        assert learned in ("good [SEP]", "was very bad [SEP]")  # the completion and its end token
        assert (labels[mask == 0] == IGNORE_INDEX).all()        # padding is never learned either
    assert sorted(tokenizer.decode(ids[m == 1][:3]) for ids, m in zip(batch["input_ids"], batch["attention_mask"])
                  ) == ["[CLS] the film", "[CLS] the plot"]


def test_chat_learns_the_assistant_turns_only(data_dir, tokenizer):
    chat_tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    conversation = [{"role": "system", "content": "the story"}, {"role": "user", "content": "good film"},
                    {"role": "assistant", "content": "great film"}, {"role": "user", "content": "and the plot"},
                    {"role": "assistant", "content": "very dull"}]
    path = write_jsonl(data_dir, [{"messages": conversation}])
    data = prepare(JobSpec.model_validate(spec("causal_lm", path, dataset={"validation_split": 0})), chat_tokenizer)
    (example,) = data.train
    learned = [t if y != IGNORE_INDEX else None for t, y in zip(example["input_ids"], example["labels"])]
    spans = " | ".join(chat_tokenizer.decode([t for t in learned[i:j] if t is not None])
                       for i, j in _runs(learned))
    assert spans == "great film [SEP] | very dull [SEP]"
    with pytest.raises(DataError, match="has no chat template"):
        prepare(JobSpec.model_validate(spec("causal_lm", path, dataset={"validation_split": 0})), tokenizer)
    bad = write_jsonl(data_dir, [{"messages": [{"role": "user", "content": "good film"}]}])
    with pytest.raises(DataError, match="row 1: the conversation has no assistant turn"):
        prepare(JobSpec.model_validate(spec("causal_lm", bad, dataset={"validation_split": 0})), chat_tokenizer)


def _runs(learned: list) -> list[tuple[int, int]]:
    """[start, end) of each stretch of learned (non-None) positions."""
    runs, start = [], None
    for i, token in enumerate([*learned, None]):
        if token is not None and start is None:
            start = i
        elif token is None and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_long_rows_are_truncated_and_counted(data_dir, tokenizer):
    rows = [{"sentence": " ".join(["good"] * n), "label": n % 2} for n in (2, 3, 10, 12)]
    data = prepare(JobSpec.model_validate(spec("sequence_classification", write_jsonl(data_dir, rows),
                                               dataset={"validation_split": 0}, max_seq_len=8)), tokenizer)
    assert data.truncated == 2 and data.rows == 4
    assert sorted(len(e["input_ids"]) for e in data.train) == [4, 5, 8, 8]
    assert all(e["input_ids"][-1] == tokenizer.sep_token_id for e in data.train)  # the tokenizer's own cut


def test_batches_group_similar_lengths_and_use_each_row_once():
    lengths = list(range(1, 200))
    order = length_grouped_order(lengths, 8, seed=3)
    batches = order(0)
    assert len(batches) == 199 // 8 and all(len(b) == 8 for b in batches)
    used = [i for b in batches for i in b]
    assert len(set(used)) == len(used) == 8 * 24  # no row twice; 7 left over, as a drop-last loop would
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) < 30  # random batches of 8 from 1..199 would differ by ~150
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts)  # short and long batches interleave
    assert order(0) == length_grouped_order(lengths, 8, seed=3)(0)  # a resumed run sees the same batches
    assert order(1) != order(0)  # each epoch draws new batches


# -- whole jobs -------------------------------------------------------------------------------------

def test_string_labels_reach_the_merged_config(engine, tmp_path):
    job_id = new_job(spec("sequence_classification", "sentiment.csv", max_steps=12))
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert {"eval_accuracy", "eval_f1", "eval_mcc", "eval_loss"} <= last.keys()
    config = json.loads((extract(job_id, "merged", tmp_path) / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["problem_type"] == "single_label_classification"


def test_three_string_classes_replace_the_two_label_head(engine, data_dir, tmp_path):
    rows = [{"premise": s, "hypothesis": "the film", "label": ["entailment", "neutral", "contradiction"][i % 3]}
            for i, (s, _) in enumerate(sentiment_rows(60, seed=4))]
    job_id = new_job(spec("sequence_classification", write_jsonl(data_dir, rows), max_steps=12))
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert any(m.startswith("data: 45 training and 15 validation examples, 3 labels; text from 'premise', "
                            "text_pair from 'hypothesis', label from 'label'") for m in events), events
    assert -1 <= last["eval_mcc"] <= 1 and 0 <= last["eval_f1"] <= 1
    config = json.loads((extract(job_id, "merged", tmp_path) / "config.json").read_text())
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}


def test_fractional_scores_train_a_regression_head(engine, data_dir, tmp_path):
    import random

    rng = random.Random(0)
    rows = []
    for _i in range(64):  # an STS-B-like score: how many positive words, out of two
        words = [rng.choice(POSITIVE if rng.random() < 0.5 else NEGATIVE) for _ in range(2)]
        rows.append({"sentence1": " ".join(words), "sentence2": rng.choice(FILLER),
                     "score": f"{2.5 * sum(w in POSITIVE for w in words) + rng.random() / 10:.3f}"})
    # tiny-bert has a 2-label head: the job replaces it with a fresh 1-output regression head
    job_id = new_job(spec("sequence_classification", write_jsonl(data_dir, rows), max_steps=12))
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert {"eval_pearson", "eval_spearman", "eval_loss"} <= last.keys()
    assert any(m.startswith("data: 48 training and 16 validation examples, regression") for m in events), events
    config = json.loads((extract(job_id, "merged", tmp_path) / "config.json").read_text())
    assert (config["problem_type"], len(config["id2label"])) == ("regression", 1)


def test_whole_number_labels_too_large_for_class_ids_fail_before_the_model_loads(engine, data_dir):
    rows = [{"sentence": f"{w} film", "label": 10 ** 12 * (i % 2)} for i, w in enumerate(POSITIVE * 8)]
    job_id = new_job(spec("sequence_classification", write_jsonl(data_dir, rows), max_steps=12))
    assert claim_and_run(job_id) == "failed"
    job, _, last = finished(job_id)
    assert "label 1000000000000 would be a class id" in job.error and "label_type to regression" in job.error
    assert not last


def test_a_run_whose_loss_overflows_fails_saying_it_diverged(engine, data_dir):
    # Scores of 1e30 are finite, but their squared error overflows float32: the loss is inf at the first step.
    rows = [{"sentence1": f"{w} film", "sentence2": "plot", "score": f"{1e30 * (i + 1.5):.3e}"}
            for i, w in enumerate(POSITIVE * 8)]
    job_id = new_job(spec("sequence_classification", write_jsonl(data_dir, rows), max_steps=12,
                             dataset={"label_type": "regression"}))
    assert claim_and_run(job_id) == "failed"
    job, events, last = finished(job_id)
    assert job.error.startswith("the training loss became inf at step 1: the run diverged"), job.error
    assert "training.learning_rate" in job.error and "labels" in job.error
    assert "loss" not in last, "nothing of the diverged step is stored (only the evaluation before training)"


def test_a_second_job_on_the_same_data_reuses_the_tokenised_cache(engine, data_dir):
    long = " and the plot was really quite"  # 6 more words: 13 tokens, over a max_seq_len of 9
    path = write_jsonl(data_dir, [{"sentence": s + (long if i % 10 == 0 else ""), "label": y}
                                  for i, (s, y) in enumerate(sentiment_rows(40, seed=5))])
    first = new_job(spec("sequence_classification", path, max_steps=12))
    second = new_job(spec("sequence_classification", path, max_steps=12, learning_rate=1e-3))
    other_length = new_job(spec("sequence_classification", path, max_steps=12, max_seq_len=9))
    other_length_again = new_job(spec("sequence_classification", path, max_steps=12, max_seq_len=9))
    jobs = (first, second, other_length, other_length_again)
    for job_id in jobs:
        succeeded(job_id)
    reused = [any("reused from the cache" in m for m in finished(j)[1]) for j in jobs]
    # another max_seq_len is another key; truncating rows leaves the tokenizer's identity as it was
    assert reused == [False, True, False, True]
    truncated = [m for m in finished(other_length)[1] if "max_seq_len=9" in m]
    assert len(truncated) == 1 and truncated[0].startswith("4 of 40 rows exceed"), truncated


def test_an_unreachable_hub_dataset_fails_the_job_with_a_clear_event(engine, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job = spec("sequence_classification", "sentiment.csv")
    job["dataset"] = {"source": "hub", "path": "nyu-mll/glue", "name": "sst2", "split": "train"}
    job_id = new_job(job)
    assert claim_and_run(job_id) == "failed"
    row, events, _ = finished(job_id)
    assert row.error.startswith("hub dataset 'nyu-mll/glue' (name='sst2', split='train') could not be loaded")
    assert events[-1] == row.error and "reach the hub" in row.error


def test_a_chat_job_trains_on_assistant_turns(engine, data_dir, tiny_chat_gpt2_dir):
    rows = [{"messages": [{"role": "user", "content": f"{s}"},
                          {"role": "assistant", "content": "good" if y == "positive" else "bad"}]}
            for s, y in sentiment_rows(48, seed=2)]
    job_id = new_job(spec("causal_lm", write_jsonl(data_dir, rows), model="tiny-chat-gpt2", max_steps=12))
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert last["eval_perplexity"] == pytest.approx(np.exp(last["eval_loss"]), rel=1e-5)
    assert any("messages from 'messages'" in m for m in events), events


# -- seq2seq on a tiny random T5 ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_t5_dir(tiny_model_dir) -> Path:
    """A 2-layer T5 from a config, with a word-level tokenizer that ends every text with </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder = tiny_model_dir.parent / "tiny-t5"
    if folder.exists():
        return folder
    vocab = ["<pad>", "</s>", "<unk>", "reverse", ":", *POSITIVE, *NEGATIVE, *FILLER]  # T5 ids: pad 0, eos 1
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_a_seq2seq_job_exports_an_adapter_stock_peft_loads(engine, data_dir, tiny_t5_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    rows = [{"source": f"reverse : {s}", "target": " ".join(reversed(s.split()))} for s, _ in sentiment_rows(64)]
    job_id = new_job(spec("seq2seq", write_jsonl(data_dir, rows), model="tiny-t5", max_steps=16))
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert last["eval_loss"] > 0 and last["eval_perplexity"] > 1
    assert last["eval_rouge_examples"] == 16  # the whole held-out quarter, under the 64-example cap
    assert all(0 <= last[f"eval_rouge{n}"] <= 1 for n in ("1", "2", "L")), last
    adapter, merged = extract(job_id, "adapter", tmp_path), extract(job_id, "merged", tmp_path)
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"

    tokenizer = AutoTokenizer.from_pretrained(merged)
    batch = tokenizer(["reverse : good film", "reverse : the plot was dull"], padding=True, return_tensors="pt")
    labels = tokenizer(["film good", "dull was plot the"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
        # Decoder inputs rather than labels: given labels, PEFT's AdaLoRA adds its training-only penalty.
        batch["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(labels=labels)
        before = base(**batch).logits
        with_adapter = PeftModel.from_pretrained(base, adapter).eval()(**batch).logits
        merged_logits = AutoModelForSeq2SeqLM.from_pretrained(merged).eval()(**batch).logits
    # fp32 on a 32-wide model: the merged weights differ from base + adapter only by rounding.
    torch.testing.assert_close(merged_logits, with_adapter, atol=1e-4, rtol=1e-4)
    assert (with_adapter - before).abs().max() > 1e-3  # training changed the model


def test_rouge_scores_the_first_64_validation_examples_each_against_its_own_target(data_dir, tiny_t5_dir):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    # Sources of varied length, so the eval's length-sorted batches reorder them and need padding.
    rows = [{"source": f"reverse : {' '.join(s.split()[:2 + i % 4])}", "target": s}
            for i, (s, _) in enumerate(sentiment_rows(80, seed=6))]
    data = prepare(JobSpec.model_validate(spec("seq2seq", write_jsonl(data_dir, rows), model="tiny-t5",
                                               dataset={"validation_split": 0})), tokenizer)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # the saved init only ever emits <pad>; large weights give varied words
            p.normal_(0, 1.0)
        scores = make_eval_fn("seq2seq", data.train, make_collate(tokenizer.pad_token_id), 16,
                              tokenizer=tokenizer)(model)
        # one example at a time, unpadded, in the given order: the pairing the batched eval must reproduce
        longest = max(len(e["labels"]) for e in data.train[:64])
        predictions = [tokenizer.decode(model.generate(torch.tensor([e["input_ids"]]), max_new_tokens=longest,
                                                       num_beams=1, do_sample=False)[0], skip_special_tokens=True)
                       for e in data.train[:64]]
    references = [tokenizer.decode(e["labels"], skip_special_tokens=True) for e in data.train[:64]]
    expected = metrics.rouge(references, predictions)
    assert scores["rouge_examples"] == 64
    assert {k: scores[k] for k in expected} == pytest.approx(expected, abs=1e-9)
    assert 0 < expected["rouge1"] < 1
    assert metrics.rouge(references, predictions[1:] + predictions[:1]) != pytest.approx(expected)  # pairing shows


def test_the_job_spec_refuses_columns_of_another_task(data_dir):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="dataset.label_column does not apply to task seq2seq"):
        JobSpec.model_validate(spec("seq2seq", "sentiment.csv", dataset={"label_column": "label"}))
    with pytest.raises(ValidationError, match="give prompt_column and completion_column together"):
        JobSpec.model_validate(spec("causal_lm", "sentiment.csv", dataset={"prompt_column": "p"}))
