"""Local data files -> in-memory Datasets: TSV, CSV, JSON Lines, JSON, Parquet (optionally
.gz), with errors that name the file and line (cell counts, missing labels, UTF-8, JSON)."""

import csv
import gzip
import io
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

EXTENSIONS = ("tsv", "csv", "jsonl", "json", "parquet")
# A configured validation split name also matches the other common spelling.
SPLIT_ALIASES = {"dev": ("dev", "validation"), "validation": ("validation", "dev")}
# The first bytes of compressed files, which a misnamed data file may be.
MAGIC = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
# A long document is one cell: csv's 128 KiB default would refuse it.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def aliases(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


def find_file(folder: Path, split: str) -> Path:
    """The first `{split}.{ext}[.gz]` in folder, ext in EXTENSIONS order; aliases dev/validation."""
    for name in aliases(split):
        for ext in EXTENSIONS:
            for suffix in ("", ".gz"):
                path = folder / f"{name}.{ext}{suffix}"
                if path.exists() and not path.is_dir():  # a named pipe too
                    return path
    looked = ", ".join(f"{name}.{{{','.join(EXTENSIONS)}}}[.gz]" for name in aliases(split))
    raise FileNotFoundError(f"no {split!r} data file in {folder}: looked for {looked}")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped for `.gz`; a compressed file under a plain name, or a
    broken `.gz`, is an error saying what to do."""
    raw = path.read_bytes()
    kind = next((name for magic, name in MAGIC.items() if raw.startswith(magic)), None)
    if path.name.endswith(".gz"):
        if kind != "gzip":
            raise ValueError(f"{path}: not gzip-compressed; re-compress it with gzip")
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path}: truncated or corrupt gzip file ({err}); compress it again"
            ) from None
    if kind == "gzip":
        raise ValueError(f"{path}: gzip-compressed; name it {path.name}.gz, or decompress it")
    if kind and not path.name.endswith(".parquet"):  # parquet may hold compressed pages only
        raise ValueError(f"{path}: a {kind} archive, not text; decompress it (or gzip it as .gz)")
    return raw


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 text; a byte-order mark (Excel's UTF-8) is dropped, not read into the header."""
    try:
        return raw.decode("utf-8-sig")
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
    try:
        return _rows(reader, path, tsv)
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num}: {err}; fix the quoting") from None


def _rows(reader, path: Path, tsv: bool) -> tuple[dict[str, list[Any]], list[int]]:
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


def _json_types(records: list[dict[str, Any]], path: Path, lines: list[int] | None) -> None:
    """Each key holds one type across the records (ints and floats count as numbers; null
    is allowed anywhere): Arrow would refuse a mix with a traceback."""
    seen: dict[str, tuple[str, int]] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path} record {i + 1}: expected a JSON object (a record)")
        for key, value in record.items():
            if value is None:
                continue
            kind = "number" if isinstance(value, int | float) else type(value).__name__
            kind = "bool" if isinstance(value, bool) else kind
            where = f"line {lines[i]}" if lines else f"record {i + 1}"
            first = seen.setdefault(key, (kind, where))
            if first[0] != kind:
                raise ValueError(
                    f"{path} {where}: {key!r} is a {kind}, at {first[1]} a {first[0]}; "
                    "give the column one type (quote the numbers of a text column)"
                )


def _parquet(raw: bytes, path: Path) -> datasets.Dataset:
    try:
        return datasets.Dataset(pq.read_table(io.BytesIO(raw)))
    except (pa.ArrowException, OSError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: unreadable Parquet file ({reason}); write it again") from None


def _check_rows(dataset: datasets.Dataset, path: Path) -> datasets.Dataset:
    if len(dataset) == 0:
        raise ValueError(f"{path}: no rows, only a header (or nothing); add examples to it")
    return dataset


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
    raw = _read_bytes(path)
    lines = None
    if ext == "parquet":
        dataset = _parquet(raw, path)
    elif ext in ("tsv", "csv"):
        table, lines = _read_table(_decode(raw, path), path, tsv=ext == "tsv")
        dataset = datasets.Dataset.from_dict(table)
    else:
        records, lines = _json_records(_decode(raw, path), path)
        _json_types(records, path, lines)
        dataset = datasets.Dataset.from_list(records)
    dataset = _check_rows(dataset, path)
    if label_field is None:
        return dataset
    return _check_labels(dataset, label_field, path, lines, test)
