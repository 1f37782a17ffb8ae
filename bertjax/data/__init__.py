"""Splits from the hub or local files (bertjax.data.files), label encoding and tokenization."""

import logging
import math
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from bertjax.data.files import aliases, find_file, read_file

NO_LABEL = -1  # label of unlabelled examples (GLUE test sets on the hub use it too)
DEFAULT_VALIDATION_FRACTION = 0.1  # share of train carved out when there is no validation file
log = logging.getLogger("bertjax")


def dataset_name(data_cfg: Any) -> str:
    """What the data is called in summaries: the local folder when `data.path` is set (it
    is what gets loaded), else the hub name with its subset ("glue/sst2")."""
    if data_cfg.get("path"):
        return str(data_cfg.path)
    return "/".join(x for x in (data_cfg.get("name"), data_cfg.get("subset")) if x)


def _local_file(folder: Path, key: str, name: str) -> Path | None:
    """The split's file in folder; None (logged) for a missing validation file (carved from
    train instead) or test file (no test split); a missing train file is an error."""
    try:
        return find_file(folder, name)
    except FileNotFoundError as err:
        if key == "train":
            raise FileNotFoundError(
                f"{err}; name the labelled file train.csv (or .tsv, .jsonl, .json, .parquet), "
                "or pass the file itself: --config.data.path=FILE"
            ) from None
        log.info("data: %s: %s", err, "no test split" if key == "test" else "carving validation")
        return None


def _local_splits(data_cfg: Any, wanted: dict[str, str]) -> dict[str, datasets.Dataset]:
    """Splits from `data.path`: a folder of split files, or one labelled file (train only)."""
    path = Path(data_cfg.path)
    if path.is_file():
        return {"train": read_file(path, data_cfg.label_field)}
    if not path.is_dir():
        raise FileNotFoundError(
            f"data.path {path} does not exist; pass a folder holding train.csv (or .tsv, "
            ".jsonl, .json, .parquet), or one labelled file"
        )
    files = {key: _local_file(path, key, name) for key, name in wanted.items()}
    return {
        key: read_file(file, data_cfg.label_field, key == "test")
        for key, file in files.items()
        if file is not None
    }


def _carve_validation(
    splits: dict[str, datasets.Dataset], fraction: float, seed: int
) -> dict[str, datasets.Dataset]:
    """Validation = a seeded `fraction` of train (logged with the sizes and the seed)."""
    parts = splits["train"].train_test_split(test_size=fraction, seed=seed)
    log.info(
        "data: validation = %d examples carved from train (fraction %g, seed %d), train keeps %d",
        len(parts["test"]),
        fraction,
        seed,
        len(parts["train"]),
    )
    return {**splits, "train": parts["train"], "validation": parts["test"]}


def _hub_splits(data_cfg: Any, wanted: dict[str, str]) -> dict[str, datasets.Dataset]:
    """Splits of a hub dataset (data.name, data.subset). As with a data folder, a dataset
    without the validation split gets one carved from train (read_splits) and one without
    the test split is evaluated without it; only a missing train split is an error."""
    hub = datasets.load_dataset(data_cfg.name, data_cfg.get("subset"))
    what = "/".join(filter(None, (data_cfg.name, data_cfg.get("subset"))))
    splits = {}
    for key, split in wanted.items():
        found = next((hub[name] for name in aliases(split) if name in hub), None)
        if found is not None:
            splits[key] = found
        elif key == "train":
            raise ValueError(f"dataset {what} has no split {split!r}; splits: {sorted(hub)}")
        else:
            log.info("data: dataset %s has no %r split (splits: %s)", what, split, sorted(hub))
    return splits


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
                raise ValueError(
                    f"{split} split has no text field {field!r}; columns: {columns}; "
                    "name yours with --config.data.text_fields=COLUMN (two for a pair)"
                )
        if split != "test" and data_cfg.label_field not in columns:
            raise ValueError(
                f"{split} split has no label field {data_cfg.label_field!r}; columns: "
                f"{columns}; name yours with --config.data.label_field=COLUMN"
            )


def read_splits(data_cfg: Any, seed: int) -> dict[str, datasets.Dataset]:
    """Whole splits {"train", "validation"[, "test"]} from `data.path` or the hub.

    `data.path` is a folder of split files or one labelled file. With
    `data.validation_fraction` set, or no validation file (one file, a folder with only
    train, a hub dataset without that split), validation is a seeded carve-out of train
    (DEFAULT_VALIDATION_FRACTION unless set). A test split is loaded when `data.splits.test`
    is set and its file (or hub split) exists, and may lack labels.
    """
    fraction = data_cfg.get("validation_fraction")
    wanted = {"train": data_cfg.splits.train}
    if not fraction:
        wanted["validation"] = data_cfg.splits.validation
    if data_cfg.splits.get("test"):
        wanted["test"] = data_cfg.splits.test
    if data_cfg.get("path"):
        splits = _local_splits(data_cfg, wanted)
    else:
        splits = _hub_splits(data_cfg, wanted)
    if "validation" not in splits:
        splits = _carve_validation(splits, fraction or DEFAULT_VALIDATION_FRACTION, seed)
    _check_columns(splits, data_cfg)
    return splits


def subsets(splits: dict[str, datasets.Dataset], data_cfg: Any, seed: int):
    """The seeded `max_train_examples` / `max_eval_examples` subsets of whole splits."""
    limits = {
        "train": data_cfg.get("max_train_examples"),
        "validation": data_cfg.get("max_eval_examples"),
        "test": data_cfg.get("max_eval_examples"),
    }
    return {key: _subset(ds, limits[key], seed) for key, ds in splits.items()}


def load_splits(data_cfg: Any, seed: int) -> dict[str, datasets.Dataset]:
    """read_splits, then the seeded subsets: validation carved out of train (if so
    configured) does not depend on `max_train_examples`."""
    return subsets(read_splits(data_cfg, seed), data_cfg, seed)


def _feature_kind(feature: Any) -> str:
    if isinstance(feature, datasets.ClassLabel):
        return "class"
    dtype = getattr(feature, "dtype", "")
    if "string" in dtype:
        return "string"
    return "float" if dtype.startswith("float") else "int"


def _whole(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def label_kind(train: datasets.Dataset, field: str, num_labels: int | None = None) -> str:
    """The label type: "class" (hub ClassLabel), "string", "float" (regression) or "int".

    Floats that are all whole numbers (0.0/1.0, or 1 mixed with 1.0) are class ids, not
    regression targets, unless num_labels is 1: a file's spelling does not change the task.
    """
    kind = _feature_kind(train.features[field])
    if kind == "float" and num_labels != 1:
        values = [v for v in train[field] if v is not None]
        if values and all(map(_whole, values)):
            return "int"
    return kind


def label_names(
    splits: dict[str, datasets.Dataset], data_cfg: Any, num_labels: int | None = None
) -> list[str]:
    """Class names, index = label id; their count is num_labels. Only the train split
    defines classes: a label seen only in validation/test is refused when encoding.

    `data.labels` (names in id order), when set, is used as is; for integer labels it either
    lists the class ids (sorted) or names the classes 0..n-1 (negative,positive). String
    labels: the sorted unique train values. Integer labels: ["0", ..., str(num_labels - 1)]
    when `num_labels` is given (config.num_labels), else ["0", ..., str(max)], or the sorted
    distinct values when the smallest is 1 or more (AG News' 1-4 become 4 classes, not 5).
    Hub ClassLabel: its names. Float labels (regression): one name, the label field, so
    num_labels == 1.
    """
    field = data_cfg.label_field
    kind = label_kind(splits["train"], field, num_labels)
    given = data_cfg.get("labels")
    if kind == "float":
        return [field]
    if given:
        # --config.data.labels=neg,pos arrives as ("neg,pos",): commas separate names too
        names = [name.strip() for item in given for name in str(item).split(",")]
        if len(set(names)) != len(names):
            raise ValueError(f"data.labels={tuple(given)!r} repeats a class")
        return sorted(names, key=int) if kind == "int" and _are_ids(names) else names
    if kind == "class":
        return list(splits["train"].features[field].names)
    column = splits["train"][field]
    if kind == "string":
        return sorted({v for v in column if v is not None})
    if num_labels is not None:
        return [str(i) for i in range(num_labels)]
    if _feature_kind(splits["train"].features[field]) == "float":
        log.info(
            "label %r holds whole numbers only: classes, not regression targets "
            "(--config.num_labels=1 for regression)",
            field,
        )
    values = np.unique(np.asarray(column, np.int64))
    values = values[values != NO_LABEL]
    if values.size and values[0] >= 1:
        return [str(v) for v in values]
    return [str(i) for i in range(int(values.max(initial=-1)) + 1)]


def _are_ids(names: list[str]) -> bool:
    """Whether label names are integer class ids ("1", "3"), not names of classes 0..n-1."""
    return all(name.lstrip("-").isdigit() for name in names)


def _is_int(value: Any) -> bool:
    if isinstance(value, str):
        return value.isdigit()
    return isinstance(value, int | np.integer) or _whole(value)


def _label_ids(values: list[Any], names: list[str], kind: str, split: str) -> np.ndarray:
    """Labels of one split -> ids [n] (float32 for regression), checked against names."""
    if kind == "float":
        return np.asarray(values, np.float32)
    if kind == "string":
        index = {name: i for i, name in enumerate(names)}
        unknown = [(row, v) for row, v in enumerate(values) if v not in index]
        if unknown:
            row, value = unknown[0]
            raise ValueError(
                f"{split} split row {row}: label {value!r} is not a train label "
                f"({', '.join(names[:10])}); fix the row, or list every class in "
                "--config.data.labels"
            )
        return np.asarray([index[v] for v in values], np.int32)
    wrong = [(row, v) for row, v in enumerate(values) if not _is_int(v)]
    if wrong:
        row, value = wrong[0]
        raise ValueError(f"{split} split row {row}: label {value!r} is not an integer class id")
    values = np.asarray(values, np.int64)
    # sorted label values: a hub ClassLabel's ids and named integer classes are 0..n-1, plain
    # integers are their own names
    named = kind == "class" or not _are_ids(names)
    classes = np.arange(len(names)) if named else np.asarray(names, np.int64)
    ids = np.searchsorted(classes, values)
    found = ids < len(classes)
    found[found] = classes[ids[found]] == values[found]
    bad = np.flatnonzero(~found & (values != NO_LABEL))
    if len(bad):
        raise ValueError(
            f"{split} split row {bad[0]}: label {values[bad[0]]} is not a class of the train "
            f"split ({names[0]}..{names[-1]}, num_labels {len(names)}); fix the row, or set "
            "--config.num_labels or --config.data.labels"
        )
    return np.where(values == NO_LABEL, NO_LABEL, ids).astype(np.int32)


def encode_labels(
    splits: dict[str, datasets.Dataset], names: list[str], data_cfg: Any
) -> dict[str, datasets.Dataset]:
    """Replaces `data.label_field` by an int32 "label" column of ids into names.

    A split without the label field (an unlabelled test set) gets label NO_LABEL (-1)
    everywhere; see `has_labels`. Regression (float) labels (one name) stay float32.
    """
    field = data_cfg.label_field
    kind = label_kind(splits["train"], field, len(names))
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


def check_max_length(tokenizer: Any, max_length: int, pair: bool) -> None:
    """data.max_length must leave room for text beside the special tokens ([CLS] … [SEP]):
    below them the tokenizer does not truncate at all."""
    count = getattr(tokenizer, "num_special_tokens_to_add", None)  # a transformers method
    if count is None:
        return
    special = count(pair=pair)
    if max_length <= special + pair:
        raise ValueError(
            f"data.max_length={max_length} leaves no room for text: the tokenizer adds "
            f"{special} special tokens to {'a pair' if pair else 'a text'}; use at least "
            f"{special + 1 + pair} (e.g. 128)"
        )


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
    check_max_length(tokenizer, data_cfg.max_length, pair=len(fields) == 2)

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
    """read_splits -> label_names of the whole train split (unless given, e.g. from a
    checkpoint) -> subsets -> encode -> tokenize."""
    splits, names = labelled(data_cfg, seed, names, num_labels)
    return tokenize(splits, tokenizer, data_cfg), names


def labelled(
    data_cfg: Any, seed: int, names: list[str] | None = None, num_labels: int | None = None
) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """`prepare` up to its tokenizer: the splits (subsets, labels encoded) and the class
    names, so the model can be built before the tokenizer is loaded."""
    splits = read_splits(data_cfg, seed)
    names = label_names(splits, data_cfg, num_labels) if names is None else list(names)
    return encode_labels(subsets(splits, data_cfg, seed), names, data_cfg), names
