"""Dataset reading, column detection, labels and batching, on small files written here."""

from __future__ import annotations

import json

import pytest
import torch

from service.dataset import DataError
from service.dataset.readers import count_training_rows, read_file, read_splits
from service.jobspec import JobSpec
from tests.conftest import reset_service_caches, tiny_job_spec
from worker.data import (
    infer_labels,
    label_map,
    make_collate,
    make_eval_fn,
    pick_label_column,
    pick_text_columns,
    prepare,
)


@pytest.fixture
def data_dir(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("DATA_DIRS", str(tmp_path))
    monkeypatch.setenv("MODEL_DIRS", str(tiny_model_dir.parent))
    reset_service_caches()
    yield tmp_path
    reset_service_caches()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def spec_for(path: str, task: str = "sequence_classification", **dataset) -> JobSpec:
    spec = tiny_job_spec()
    spec["task"] = task
    spec["dataset"] = {"source": "server", "path": path, **dataset}
    return JobSpec.model_validate(spec)


def test_tsv_keeps_bare_quotes_literally(data_dir):
    (data_dir / "glue.tsv").write_text('sentence\tlabel\nit \'s a "quoted" word\t1\n"open quote only\t0\n')
    columns = read_file(data_dir / "glue.tsv", "tsv")
    assert columns == {"sentence": ['it \'s a "quoted" word', '"open quote only'], "label": ["1", "0"]}


def test_jsonl_and_column_json_read_the_same(data_dir):
    rows = [{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}]
    (data_dir / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (data_dir / "b.json").write_text(json.dumps({"text": ["good film", "bad film"], "label": [1, 0]}))
    assert read_file(data_dir / "a.jsonl", "jsonl") == read_file(data_dir / "b.json", "json")


def test_a_json_object_holds_records_under_data_or_columns_of_one_length(data_dir):
    (data_dir / "records.json").write_text(json.dumps({"data": [{"text": "good film", "label": 1}]}))
    assert read_file(data_dir / "records.json", "json") == {"text": ["good film"], "label": [1]}
    (data_dir / "short.json").write_text(json.dumps({"text": ["good film", "bad film"], "label": [1]}))
    with pytest.raises(DataError, match=r"short.json is not valid json: the columns hold different numbers of "
                                        r"values \(1, 2\); give every column one value per row"):
        read_file(data_dir / "short.json", "json")


def test_broken_json_names_the_file(data_dir):
    (data_dir / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(DataError, match="bad.jsonl is not valid jsonl"):
        read_file(data_dir / "bad.jsonl", "jsonl")


@pytest.mark.parametrize(("header", "expected"), [
    ("sentence1,sentence2,label", ("sentence1", "sentence2")),
    ("premise,hypothesis,label", ("premise", "hypothesis")),
    ("idx,sentence,label", ("sentence",)),
    ("id,body,label", ("body",)),  # the only text column that is not the label
])
def test_text_columns_are_detected_by_common_names(data_dir, header, expected):
    (data_dir / "d.csv").write_text(header + "\n" + ",".join(["7", "a b", "1"][-len(header.split(",")):]) + "\n")
    spec = spec_for("d.csv")
    columns = read_file(data_dir / "d.csv", "csv")
    if header.startswith("id,"):
        columns["id"] = [7]  # numbers from a typed source are not text
    assert pick_text_columns(spec, columns) == expected


def test_unknown_columns_ask_for_the_mapping(data_dir):
    (data_dir / "d.csv").write_text("a,b,c\nx,y,z\n")
    spec, columns = spec_for("d.csv"), read_file(data_dir / "d.csv", "csv")
    with pytest.raises(DataError, match="set dataset.text_column"):
        pick_text_columns(spec, columns)
    with pytest.raises(DataError, match="set dataset.label_column"):
        pick_label_column(spec, columns)


def test_labels_as_digits_stay_ids_and_strings_get_a_sorted_map():
    assert label_map(["0", "2", "1"]) == (None, 3)
    assert label_map(["neg", "pos", "neg"]) == (["neg", "pos"], 2)
    with pytest.raises(DataError, match="unlabelled test split"):
        label_map([-1, 0])
    assert infer_labels([0.5, 1.5]).regression and infer_labels(["4.750", "1"]).num_labels == 1


def test_classification_examples_hold_out_validation_and_map_string_labels(data_dir, tokenizer, tiny_dataset_file):
    (data_dir / "s.csv").write_text(tiny_dataset_file.read_text())
    spec = spec_for("s.csv", validation_split=0.25)
    data = prepare(spec, tokenizer)
    assert (len(data.train), len(data.validation)) == (72, 24)
    assert count_training_rows(spec) == 72
    assert (data.num_labels, data.label_names) == (2, ["negative", "positive"])
    assert {e["labels"] for e in data.train} == {0, 1}
    batch = make_collate(tokenizer.pad_token_id)(data.train[:4])
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["labels"].shape == (4,)


def test_causal_lm_labels_are_the_inputs_and_padding_is_ignored(data_dir, tokenizer):
    (data_dir / "lm.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in
                                                 ["good film", "a very good and great story", "", "sad"]) + "\n")
    spec = spec_for("lm.jsonl", task="causal_lm", validation_split=0)
    spec.training.max_seq_len = 8
    data = prepare(spec, tokenizer)
    assert all(e["labels"] == e["input_ids"] for e in data.train)
    # 4 + 8 + 3 tokens ([CLS] ... [SEP]) of the non-empty rows, packed into blocks of 8
    assert [len(e["input_ids"]) for e in data.train] == [8, 7] and data.validation == []
    batch = make_collate(tokenizer.pad_token_id)(data.train)
    assert (batch["labels"] == -100).sum() == (batch["attention_mask"] == 0).sum() == 1


def test_a_model_folder_without_tokenizer_files_fails_before_training_on_nothing(data_dir, tiny_model_dir):
    from transformers import AutoTokenizer, GPT2Config

    (data_dir / "lm.jsonl").write_text(json.dumps({"text": "good film"}) + "\n")
    folder = data_dir / "config-only"
    GPT2Config(vocab_size=33, n_embd=32, n_layer=2, n_head=2).save_pretrained(folder)
    empty = AutoTokenizer.from_pretrained(folder)  # transformers 5 builds one with no vocabulary at all
    assert empty("good film")["input_ids"] == []
    with pytest.raises(DataError, match="its tokenizer has no vocabulary .* add the files of the tokenizer"):
        prepare(spec_for("lm.jsonl", task="causal_lm", validation_split=0), empty)


def test_classification_eval_reports_accuracy_and_loss(data_dir, tokenizer, tiny_dataset_file, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    (data_dir / "s.csv").write_text(tiny_dataset_file.read_text())
    data = prepare(spec_for("s.csv"), tokenizer)
    collate = make_collate(tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        scores = make_eval_fn(data.kind, data.validation, collate, 4)(model)
        logits = model(**collate(data.validation)).logits
    labels = torch.tensor([e["labels"] for e in data.validation])
    assert scores["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
    assert scores["loss"] > 0
    assert make_eval_fn("sequence_classification", [], collate, 4) is None


def test_causal_lm_eval_hands_the_model_no_mask_and_scores_as_with_it():
    from tests.core.tiny import tiny_gpt2

    model = tiny_gpt2()
    seen = []
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": (ids := torch.randint(1, 100, (n,), generator=g).tolist()), "labels": ids}
                for n in (3, 9, 5, 12, 7, 4)]
    collate = make_collate(0)
    with torch.no_grad():
        want = sum(model(**collate([e])).loss * (len(e["input_ids"]) - 1) for e in examples)  # each alone
        model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
        scores = make_eval_fn("causal_lm", examples, collate, 4)(model)
    assert scores["loss"] == pytest.approx(float(want) / sum(len(e["input_ids"]) - 1 for e in examples), rel=1e-5)
    assert len(seen) == 2 and all("attention_mask" not in kwargs for kwargs in seen)  # two padded batches


def test_a_named_validation_file_replaces_the_hold_out(data_dir, tiny_dataset_file):
    (data_dir / "train.csv").write_text(tiny_dataset_file.read_text())
    (data_dir / "dev.csv").write_text("sentence,label\ngood film,positive\n")
    train, validation = read_splits(spec_for("train.csv", validation_path="dev.csv"))
    assert len(train["sentence"]) == 96 and validation["sentence"] == ["good film"]


def test_a_file_without_header_reads_with_column_names(data_dir):
    (data_dir / "cola.tsv").write_text("gj04\t1\t\tthe film was good .\ngj04\t0\t*\tfilm the good was .\n")
    spec = spec_for("cola.tsv", column_names=["source", "label", "orig_label", "sentence"])
    train, validation = read_splits(spec)
    assert train["sentence"] + validation["sentence"] in (
        ["the film was good .", "film the good was ."], ["film the good was .", "the film was good ."])


def test_a_row_with_a_different_width_names_the_line(data_dir):
    (data_dir / "ragged.csv").write_text("sentence,label\ngood film,1\nbad, awful film,0\n")
    with pytest.raises(DataError, match="ragged.csv, line 3"):
        read_file(data_dir / "ragged.csv", "csv")


def test_an_unreachable_hub_dataset_says_what_to_check(data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here; the message must still be actionable
    spec = tiny_job_spec()
    spec["dataset"] = {"source": "hub", "path": "no-such-org/no-such-dataset"}
    with pytest.raises(DataError, match="hub dataset 'no-such-org/no-such-dataset'.*could not be loaded.*"
                                        "has the dataset cached"):
        read_splits(JobSpec.model_validate(spec))
