"""Loading, label encoding and tokenization of text-classification datasets (hub or local files)."""

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq

EXTENSIONS = ("tsv", "csv", "jsonl", "json", "parquet")
# A configured validation split name also matches the other common spelling.
SPLIT_ALIASES = {"dev": ("dev", "validation"), "validation": ("validation", "dev")}
NO_LABEL = -1  # label of unlabelled examples (GLUE test sets on the hub use it too)


def dataset_name(data_cfg: Any) -> str:
    """What the data is called in summaries: the local folder when `data.path` is set (it
    is what gets loaded), else the hub name with its subset ("glue/sst2")."""
    if data_cfg.get("path"):
        return str(data_cfg.path)
    return "/".join(x for x in (data_cfg.get("name"), data_cfg.get("subset")) if x)


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


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path} line {line}: byte 0x{raw[err.start]:02x} is not UTF-8; re-save the file "
            "as UTF-8"
        ) from None


def _json_records(text: str, path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """(records, their line numbers) of a JSON array of records (line numbers None), or of
    JSON Lines (also accepted in a .json file)."""
    if text.lstrip().startswith("["):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(records[-1], dict):
                raise ValueError(f"{path} line {number}: expected a JSON object per line")
            lines.append(number)
    return records, lines


def _typed(values: list[str]) -> list[Any]:
    """A column of cells as ints, else floats, else the strings (pandas' inference); empty
    cells become None in a numeric column."""
    filled = [v for v in values if v != ""]
    for kind in (int, float):
        try:
            converted = {v: kind(v) for v in filled}
        except ValueError:
            continue
        if filled:
            return [converted[v] if v != "" else None for v in values]
    return values


def _read_table(text: str, path: Path, tsv: bool) -> tuple[dict[str, list[Any]], list[int]]:
    """(columns, line numbers of the rows) of a TSV (quoting off: GLUE-style files hold
    unbalanced `"` in the text) or a CSV (standard quoting). Every row must have the header's
    number of cells; blank lines are skipped."""
    quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter="\t" if tsv else ",", quoting=quoting
    )
    header = next(reader, None)
    if not header:
        raise ValueError(f"{path}: empty file; the first line must name the columns")
    rows, lines = [], []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(
                f"{path} line {reader.line_num}: {len(row)} cells, the header has "
                f"{len(header)} ({', '.join(header)})"
                + ("; a tab inside a text?" if tsv and len(row) > len(header) else "")
            )
        rows.append(row)
        lines.append(reader.line_num)
    return {name: _typed([row[i] for row in rows]) for i, name in enumerate(header)}, lines


def _check_labels(
    dataset: datasets.Dataset, field: str, path: Path, lines: list[int] | None, test: bool
) -> datasets.Dataset:
    """A missing label is an error naming the file line; a test file whose labels are all
    missing is unlabelled (the label column is dropped)."""
    if field not in dataset.column_names:
        return dataset
    values = dataset[field]
    missing = [row for row, v in enumerate(values) if v is None or v == ""]
    if missing and len(missing) == len(values) and test:
        return dataset.remove_columns(field)
    if missing:
        where = f"line {lines[missing[0]]}" if lines else f"record {missing[0] + 1}"
        raise ValueError(
            f"{path} {where}: no {field!r} value ({len(missing)} row(s) without one); "
            "label every row, or remove the rows"
        )
    return dataset


def read_file(path: Path, label_field: str | None = None, test: bool = False) -> datasets.Dataset:
    """One local data file as an in-memory Dataset.

    Empty cells stay "" in text columns. With `label_field`, a row without a label is an
    error naming the file and line, unless no row has one and `test` (an unlabelled test set).
    """
    ext = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if ext == "parquet":
        return datasets.Dataset(pq.read_table(io.BytesIO(raw)))
    text = _decode(raw, path)
    if ext in ("tsv", "csv"):
        table, lines = _read_table(text, path, tsv=ext == "tsv")
        dataset = datasets.Dataset.from_dict(table)
    else:
        records, lines = _json_records(text, path)
        dataset = datasets.Dataset.from_list(records)
    if label_field is None:
        return dataset
    return _check_labels(dataset, label_field, path, lines, test)


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


def read_splits(data_cfg: Any, seed: int) -> dict[str, datasets.Dataset]:
    """Whole splits {"train", "validation"[, "test"]} from `data.path` or the hub.

    With `data.validation_fraction` set, validation is a seeded carve-out of train (the
    dataset's own validation split, if any, is not loaded). A test split is loaded when
    `data.splits.test` is set, and may lack labels.
    """
    fraction = data_cfg.get("validation_fraction")
    wanted = {"train": data_cfg.splits.train}
    if not fraction:
        wanted["validation"] = data_cfg.splits.validation
    if data_cfg.splits.get("test"):
        wanted["test"] = data_cfg.splits.test
    if data_cfg.get("path"):
        folder = Path(data_cfg.path)
        splits = {
            key: read_file(_local_file(folder, key, name), data_cfg.label_field, key == "test")
            for key, name in wanted.items()
        }
    else:
        hub = datasets.load_dataset(data_cfg.name, data_cfg.get("subset"))
        what = "/".join(filter(None, (data_cfg.name, data_cfg.get("subset"))))
        splits = {key: _hub_split(hub, name, what) for key, name in wanted.items()}
    if fraction:
        parts = splits["train"].train_test_split(test_size=fraction, seed=seed)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
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
    """Class names, index = label id; their count is num_labels. Only the train split
    defines classes: a label seen only in validation/test is refused when encoding.

    `data.labels` (names in id order), when set, is used as is. String labels: the sorted
    unique train values. Integer labels: ["0", ..., str(num_labels - 1)] when `num_labels`
    is given (config.num_labels), else ["0", ..., str(max)], or the sorted distinct values
    when the smallest is 1 or more (AG News' 1-4 become 4 classes, not 5). Hub ClassLabel:
    its names. Float labels (regression): one name, the label field, so num_labels == 1.
    """
    field = data_cfg.label_field
    kind = _label_kind(splits["train"].features[field])
    given = data_cfg.get("labels")
    if kind == "float":
        return [field]
    if given:
        # --config.data.labels=neg,pos arrives as ("neg,pos",): commas separate names too
        names = [name.strip() for item in given for name in str(item).split(",")]
        if kind == "int" and not all(name.lstrip("-").isdigit() for name in names):
            raise ValueError(
                f"data.labels={tuple(given)!r}: the {field!r} column holds integer class ids; "
                "list those (e.g. '0', '1')"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"data.labels={tuple(given)!r} repeats a class")
        return sorted(names, key=int) if kind == "int" else names
    if kind == "class":
        return list(splits["train"].features[field].names)
    column = splits["train"][field]
    if kind == "string":
        return sorted({v for v in column if v is not None})
    if num_labels is not None:
        return [str(i) for i in range(num_labels)]
    values = np.unique(np.asarray(column, np.int64))
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
    # sorted label values: a hub ClassLabel's ids are 0..n-1, plain integers are their names
    classes = np.arange(len(names)) if kind == "class" else np.asarray(names, np.int64)
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
    """read_splits -> label_names of the whole train split (unless given, e.g. from a
    checkpoint) -> subsets -> encode -> tokenize."""
    splits = read_splits(data_cfg, seed)
    names = label_names(splits, data_cfg, num_labels) if names is None else list(names)
    splits = encode_labels(subsets(splits, data_cfg, seed), names, data_cfg)
    return tokenize(splits, tokenizer, data_cfg), names
