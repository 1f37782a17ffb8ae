"""Loading, label encoding and tokenization of text-classification datasets (hub or local files)."""

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

EXTENSIONS = ("tsv", "csv", "jsonl", "json", "parquet")
# A configured validation split name also matches the other common spelling.
SPLIT_ALIASES = {"dev": ("dev", "validation"), "validation": ("validation", "dev")}
NO_LABEL = -1  # label of unlabelled examples (GLUE test sets on the hub use it too)


def _aliases(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


def find_file(folder: Path, split: str) -> Path:
    """The first `{split}.{ext}[.gz]` in folder, ext in EXTENSIONS order; aliases dev/validation."""
    for name in _aliases(split):
        for ext in EXTENSIONS:
            for suffix in ("", ".gz"):
                path = folder / f"{name}.{ext}{suffix}"
                if path.is_file():
                    return path
    looked = ", ".join(f"{name}.{{{','.join(EXTENSIONS)}}}[.gz]" for name in _aliases(split))
    raise FileNotFoundError(f"no {split!r} data file in {folder}: looked for {looked}")


def _local_file(folder: Path, key: str, name: str) -> Path:
    try:
        return find_file(folder, name)
    except FileNotFoundError as err:
        if key != "test":
            raise
        raise FileNotFoundError(f"{err} (no test set? pass --config.data.splits.test=)") from None


def _json_records(text: str) -> list[dict[str, Any]]:
    """A JSON array of records, or JSON Lines (also accepted in a .json file)."""
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_file(path: Path) -> datasets.Dataset:
    """One local data file as an in-memory Dataset.

    TSV is read with quoting off (GLUE-style files hold unbalanced `"` in the text); CSV with
    standard quoting. Empty cells stay "" rather than becoming NaN.
    """
    ext = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    opener = gzip.open if path.name.endswith(".gz") else open
    if ext in ("tsv", "csv"):
        frame = pd.read_csv(
            path,
            sep="\t" if ext == "tsv" else ",",
            quoting=csv.QUOTE_NONE if ext == "tsv" else csv.QUOTE_MINIMAL,
            keep_default_na=False,
        )
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    with opener(path, "rb") as f:
        raw = f.read()
    if ext == "parquet":
        return datasets.Dataset(pq.read_table(io.BytesIO(raw)))
    return datasets.Dataset.from_list(_json_records(raw.decode("utf-8")))


def _hub_split(hub: datasets.DatasetDict, split: str, what: str) -> datasets.Dataset:
    for name in _aliases(split):
        if name in hub:
            return hub[name]
    raise ValueError(f"dataset {what} has no split {split!r}; splits: {sorted(hub)}")


def _subset(dataset: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of n examples, kept in original order.

    The same examples as `dataset.shuffle(seed).select(range(n))`.
    """
    if n is None or n >= len(dataset):
        return dataset
    return dataset.select(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n]))


def _check_columns(splits: dict[str, datasets.Dataset], data_cfg: Any) -> None:
    for split, dataset in splits.items():
        columns = dataset.column_names
        for field in data_cfg.text_fields:
            if field not in columns:
                raise ValueError(f"{split} split has no text field {field!r}; columns: {columns}")
        if split != "test" and data_cfg.label_field not in columns:
            raise ValueError(
                f"{split} split has no label field {data_cfg.label_field!r}; columns: {columns}"
            )


def load_splits(data_cfg: Any, seed: int) -> dict[str, datasets.Dataset]:
    """Raw splits {"train", "validation"[, "test"]} from `data.path` or the hub.

    With `data.validation_fraction` set, validation is a seeded carve-out of train (the
    dataset's own validation split, if any, is not loaded); it happens before the seeded
    `max_train_examples` subset, so the validation set does not depend on that. A test split
    is loaded when `data.splits.test` is set, and may lack labels.
    """
    fraction = data_cfg.get("validation_fraction")
    wanted = {"train": data_cfg.splits.train}
    if not fraction:
        wanted["validation"] = data_cfg.splits.validation
    if data_cfg.splits.get("test"):
        wanted["test"] = data_cfg.splits.test
    if data_cfg.get("path"):
        folder = Path(data_cfg.path)
        splits = {key: read_file(_local_file(folder, key, name)) for key, name in wanted.items()}
    else:
        hub = datasets.load_dataset(data_cfg.name, data_cfg.get("subset"))
        what = "/".join(filter(None, (data_cfg.name, data_cfg.get("subset"))))
        splits = {key: _hub_split(hub, name, what) for key, name in wanted.items()}
    if fraction:
        parts = splits["train"].train_test_split(test_size=fraction, seed=seed)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
    _check_columns(splits, data_cfg)
    limits = {
        "train": data_cfg.get("max_train_examples"),
        "validation": data_cfg.get("max_eval_examples"),
        "test": data_cfg.get("max_eval_examples"),
    }
    return {key: _subset(ds, limits[key], seed) for key, ds in splits.items()}


def _label_kind(feature: Any) -> str:
    """The label type: "class" (hub ClassLabel), "string", "float" (regression) or "int"."""
    if isinstance(feature, datasets.ClassLabel):
        return "class"
    dtype = getattr(feature, "dtype", "")
    if "string" in dtype:
        return "string"
    return "float" if dtype.startswith("float") else "int"


def label_names(
    splits: dict[str, datasets.Dataset], data_cfg: Any, num_labels: int | None = None
) -> list[str]:
    """Class names, index = label id; their count is num_labels.

    String labels: sorted unique values over all labelled splits. Integer labels:
    ["0", ..., str(num_labels - 1)] when `num_labels` is given (config.num_labels), else
    ["0", ..., str(max)], or the sorted distinct values when the smallest is 1 or more (AG
    News' 1-4 become 4 classes, not 5). Hub ClassLabel: its names. Float labels
    (regression): one name, the label field, so num_labels == 1.
    """
    field = data_cfg.label_field
    kind = _label_kind(splits["train"].features[field])
    if kind == "class":
        return list(splits["train"].features[field].names)
    if kind == "float":
        return [field]
    columns = [ds[field] for ds in splits.values() if field in ds.column_names]
    if kind == "string":
        return sorted({v for column in columns for v in column if v is not None})
    if num_labels is not None:
        return [str(i) for i in range(num_labels)]
    values = np.unique(np.concatenate([np.asarray(c, np.int64) for c in columns]))
    values = values[values != NO_LABEL]
    if values.size and values[0] >= 1:
        return [str(v) for v in values]
    return [str(i) for i in range(int(values.max(initial=-1)) + 1)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) or (isinstance(value, str) and value.isdigit())


def _label_ids(values: list[Any], names: list[str], kind: str, split: str) -> np.ndarray:
    """Labels of one split -> ids [n] (float32 for regression), checked against names."""
    if kind == "float":
        return np.asarray(values, np.float32)
    if kind == "string":
        index = {name: i for i, name in enumerate(names)}
        unknown = [(row, v) for row, v in enumerate(values) if v not in index]
        if unknown:
            row, value = unknown[0]
            raise ValueError(f"{split} split row {row}: label {value!r} not in {names}")
        return np.asarray([index[v] for v in values], np.int32)
    wrong = [(row, v) for row, v in enumerate(values) if not _is_int(v)]
    if wrong:
        row, value = wrong[0]
        raise ValueError(f"{split} split row {row}: label {value!r} is not an integer class id")
    values = np.asarray(values, np.int64)
    # sorted label values: a hub ClassLabel's ids are 0..n-1, plain integers are their names
    classes = np.arange(len(names)) if kind == "class" else np.asarray(names, np.int64)
    ids = np.searchsorted(classes, values)
    found = ids < len(classes)
    found[found] = classes[ids[found]] == values[found]
    bad = np.flatnonzero(~found & (values != NO_LABEL))
    if len(bad):
        raise ValueError(
            f"{split} split row {bad[0]}: label {values[bad[0]]} out of range for "
            f"num_labels {len(names)} (labels {names[0]}..{names[-1]})"
        )
    return np.where(values == NO_LABEL, NO_LABEL, ids).astype(np.int32)


def encode_labels(
    splits: dict[str, datasets.Dataset], names: list[str], data_cfg: Any
) -> dict[str, datasets.Dataset]:
    """Replaces `data.label_field` by an int32 "label" column of ids into names.

    A split without the label field (an unlabelled test set) gets label NO_LABEL (-1)
    everywhere; see `has_labels`. Regression (float) labels stay float32.
    """
    field = data_cfg.label_field
    kind = _label_kind(splits["train"].features[field])
    out = {}
    for split, dataset in splits.items():
        if field in dataset.column_names:
            ids = _label_ids(dataset[field], names, kind, split)
            dataset = dataset.remove_columns(field)
        else:
            ids = np.full(len(dataset), NO_LABEL, np.float32 if kind == "float" else np.int32)
        if "label" in dataset.column_names:
            dataset = dataset.remove_columns("label")
        out[split] = dataset.add_column("label", ids)
    return out


def has_labels(dataset: datasets.Dataset) -> bool:
    """Whether any example of an encoded split has a label (else skip its metrics)."""
    return bool(np.any(np.asarray(dataset["label"]) != NO_LABEL))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def tokenize(
    splits: dict[str, datasets.Dataset], tokenizer: Any, data_cfg: Any
) -> dict[str, datasets.Dataset]:
    """Encoded splits -> columns input_ids, [token_type_ids,] label (lists, unpadded).

    One text or a pair (`len(data.text_fields) == 2`), truncated to `data.max_length`
    (longest-first for pairs). token_type_ids is kept only when the tokenizer returns it.
    """
    fields = tuple(data_cfg.text_fields)
    if len(fields) not in (1, 2):
        raise ValueError(f"data.text_fields must name 1 or 2 fields, got {fields}")

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        texts = [[_text(v) for v in batch[field]] for field in fields]
        encoded = tokenizer(*texts, truncation=True, max_length=data_cfg.max_length)
        out = {"input_ids": encoded["input_ids"], "label": batch["label"]}
        if "token_type_ids" in encoded:
            out["token_type_ids"] = encoded["token_type_ids"]
        return out

    return {
        split: dataset.map(encode, batched=True, remove_columns=dataset.column_names)
        for split, dataset in splits.items()
    }


def prepare(
    data_cfg: Any,
    tokenizer: Any,
    seed: int,
    names: list[str] | None = None,
    num_labels: int | None = None,
) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """load_splits -> label_names (unless given, e.g. from a checkpoint) -> encode -> tokenize."""
    splits = load_splits(data_cfg, seed)
    names = label_names(splits, data_cfg, num_labels) if names is None else list(names)
    return tokenize(encode_labels(splits, names, data_cfg), tokenizer, data_cfg), names
