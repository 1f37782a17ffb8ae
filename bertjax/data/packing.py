"""Sequence packing: several examples per fixed-length row, one batch shape per run and split.

A packed batch holds `rows` rows of `length` tokens; each row holds up to `per_row` examples
back to back. Beside input_ids/attention_mask/token_type_ids [rows, length] it carries
segment_ids (0 padding, 1.. the example within its row), position_ids (index within the
example) and cls_index [rows, per_row] (each example's first token); labels, weights and
index are [rows, per_row] (weight 0 and index -1 on empty slots). The model attends within
each example only (bertjax.models.bert.segment_bias), so packed logits equal unpacked ones.

Training batches are stratified: an epoch's examples, sorted by length, are cut into
batch_size strata of equal size, and batch b takes one random example of every stratum. So a
batch is still batch_size examples of mixed lengths in random combination (never grouped by
length), while its token count hardly varies, and one static assignment of strata to rows
(sized by each stratum's longest example) fits every batch of every epoch: one shape.
"""

import dataclasses
import inspect

import jax
import numpy as np

from peft.inject import Peft

Batch = dict[str, np.ndarray]

# Relative cost of one (query, key) pair of attention against one token through the rest of
# a train step, measured for MiniLM-L6 LoRA on the 2-core CPU at a fixed 1,280 tokens per
# batch in rows of 32 … 320 (bench/RESULTS.md, "Row length"): time ∝ tokens · (1 + L / 409).
# Wider models spend relatively less on attention (favouring longer rows a little).
PAIR_COST = 1 / 400


@dataclasses.dataclass(frozen=True)
class Layout:
    """length: tokens per row; rows: rows per batch; per_row: examples per row (E);
    row_of: [batch_size] the row of each stratum (train layouts only)."""

    length: int
    rows: int
    per_row: int
    row_of: tuple[int, ...] = ()


def supported(model) -> bool:
    """Whether the model's __call__ takes packed rows (segment_ids, position_ids, cls_index);
    a peft.Peft wrapper passes its call through to the model it wraps."""
    inner = model.wrapped if isinstance(model, Peft) else model
    return "segment_ids" in inspect.signature(type(inner).__call__).parameters


def enabled(packing: bool, model) -> bool:
    """data.packing for this model; a one-line error where its family cannot pack."""
    if packing and not supported(model):
        raise ValueError(
            f"data.packing=True: {type(model).__name__} cannot pack sequences (relative or "
            "rotary positions are not wired for packed rows); set --config.data.packing=False"
        )
    return bool(packing)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def first_fit(sizes: np.ndarray, capacity: int) -> np.ndarray:
    """Row of each item by first-fit decreasing (items in the given order, largest first
    expected): [n] row ids; rows hold items summing to at most capacity."""
    room = np.zeros(0, np.int64)
    row = np.zeros(len(sizes), np.int64)
    for i, size in enumerate(sizes):
        fits = np.flatnonzero(room >= size)
        if len(fits):
            row[i] = fits[0]
            room[fits[0]] -= size
        else:
            row[i] = len(room)
            room = np.append(room, capacity - size)
    return row


def _candidates(longest: int, max_length: int) -> range:
    """Row lengths worth trying: multiples of 8 from the longest example to 4x it (≤ 512,
    and never below the longest example, whatever max_length)."""
    start = _round_up(max(longest, 1), 8)
    stop = max(start, min(max(4 * start, max_length), 512))
    return range(start, stop + 1, 8)


def _cost(rows: int, length: int, pair_cost: float) -> float:
    """Relative time of `rows` rows of `length`: dense layers plus attention."""
    return rows * length * (1 + pair_cost * length)


def stratum_bounds(lengths: np.ndarray, batch_size: int) -> np.ndarray:
    """[batch_size] the longest example any epoch can put in each stratum: with n // bs
    batches and d = n % bs examples dropped per epoch, stratum j of an epoch holds sorted
    ranks j·nb … (j+1)·nb - 1 of the kept examples, each no longer than rank + d of all."""
    n = len(lengths)
    per_stratum, dropped = n // batch_size, n % batch_size
    ranks = np.minimum((np.arange(batch_size) + 1) * per_stratum - 1 + dropped, n - 1)
    return np.sort(lengths)[ranks]


def train_layout(
    lengths: np.ndarray,
    batch_size: int,
    max_length: int = 0,
    pair_cost: float = PAIR_COST,
    multiple: int | None = None,
) -> Layout:
    """The one shape of every training batch: the row length minimising modelled time, its
    rows (a multiple of the device count) and the rows' strata (first-fit decreasing on the
    strata's longest examples, so every batch of every epoch fits)."""
    multiple = multiple or jax.device_count()
    bounds = stratum_bounds(lengths, batch_size)
    order = np.argsort(-bounds, kind="stable")
    best = None
    for length in _candidates(int(bounds.max()), max_length):
        row_sorted = first_fit(bounds[order], length)
        rows = _round_up(int(row_sorted.max()) + 1, multiple)
        cost = _cost(rows, length, pair_cost)
        if best is None or cost < best[0]:
            row_of = np.empty(batch_size, np.int64)
            row_of[order] = row_sorted
            best = (cost, length, rows, row_of)
    _, length, rows, row_of = best
    per_row = int(np.bincount(row_of).max())
    return Layout(length, rows, per_row, tuple(int(r) for r in row_of))


def train_plan(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """[n // batch_size, batch_size] example indices: batch b, stratum j (see module doc).

    Deterministic in (seed, epoch); n % batch_size random examples sit the epoch out.
    """
    rng = np.random.default_rng((seed, epoch))
    n, per_stratum = len(lengths), len(lengths) // batch_size
    kept = rng.permutation(n)[n - per_stratum * batch_size :]
    by_length = kept[np.argsort(lengths[kept], kind="stable")]  # ties in random order
    strata = rng.permuted(by_length.reshape(batch_size, per_stratum), axis=1)
    return strata.T


def pack(
    cols: dict[str, np.ndarray],
    index: np.ndarray,
    row: np.ndarray,
    layout: Layout,
    pad_id: int,
) -> Batch:
    """Examples `index` [m] placed in rows `row` [m] (in slot order within each row) ->
    a packed batch of layout.rows rows (see module doc)."""
    rows, length, per_row = layout.rows, layout.length, layout.per_row
    order = np.lexsort((np.arange(len(index)), row))  # by row, keeping the given slot order
    index, row = index[order], row[order]
    sizes = cols["lengths"][index]
    first_of_row = np.r_[True, row[1:] != row[:-1]]
    group_start = np.maximum.accumulate(np.where(first_of_row, np.arange(len(row)), 0))
    slot = np.arange(len(row)) - group_start
    ends = np.cumsum(sizes)
    start = ends - sizes - (ends - sizes)[group_start]  # token offset within the row
    if len(index) and (slot.max() >= per_row or (start + sizes).max() > length):
        raise ValueError(f"examples do not fit the packing layout {layout}")

    example = np.repeat(np.arange(len(index)), sizes)  # one entry per real token
    within = np.arange(len(example)) - np.repeat(ends - sizes, sizes)
    at = (row[example], start[example] + within)
    source = cols["offsets"][index][example] + within

    def tokens(fill: int, values) -> np.ndarray:
        out = np.full((rows, length), fill, np.int32)
        out[at] = values
        return out

    types = cols.get("token_type_ids")
    label = cols["label"]
    labels = np.zeros((rows, per_row), np.float32 if label.dtype.kind == "f" else np.int32)
    labels[row, slot] = label[index]
    weights = np.zeros((rows, per_row), np.float32)
    weights[row, slot] = 1
    cls_index = np.zeros((rows, per_row), np.int32)
    cls_index[row, slot] = start
    where = np.full((rows, per_row), -1, np.int32)
    where[row, slot] = index
    segment_ids = tokens(0, slot[example] + 1)
    batch = {
        "input_ids": tokens(pad_id, cols["input_ids"][source]),
        "attention_mask": (segment_ids > 0).astype(np.int32),
        "token_type_ids": tokens(0, types[source] if types is not None else 0),
        "segment_ids": segment_ids,
        "position_ids": tokens(0, within),
        "cls_index": cls_index,
        "labels": labels,
        "weights": weights,
        "index": where,
    }
    if "teacher_logits" in cols:  # batching.SOFT_TARGETS: placed like the labels
        soft = cols["teacher_logits"]
        batch["teacher_logits"] = np.zeros((rows, per_row, soft.shape[1]), np.float32)
        batch["teacher_logits"][row, slot] = soft[index]
    return batch


def eval_layout(
    lengths: np.ndarray,
    batch_size: int,
    max_length: int = 0,
    pair_cost: float = PAIR_COST,
    multiple: int | None = None,
) -> tuple[Layout, np.ndarray, np.ndarray]:
    """(layout, order, row): every example once, longest first, packed first-fit into rows
    of the length minimising modelled time; `row[i]` is the row of example order[i]; a batch
    is layout.rows consecutive rows, about batch_size examples' worth of tokens."""
    multiple = multiple or jax.device_count()
    order = np.argsort(-lengths, kind="stable")
    best = None
    for length in _candidates(int(lengths.max()), max_length):
        row = first_fit(lengths[order], length)
        cost = _cost(int(row.max()) + 1, length, pair_cost)
        if best is None or cost < best[0]:
            best = (cost, length, row)
    _, length, row = best
    tokens_per_batch = batch_size * float(lengths.mean())
    rows = _round_up(max(1, round(tokens_per_batch / length)), multiple)
    per_row = int(np.bincount(row).max())
    return Layout(length, rows, per_row), order, row


def eval_batches(cols: dict[str, np.ndarray], batch_size: int, pad_id: int, max_length: int = 0):
    """Every example exactly once in packed batches of one shape (see eval_layout)."""
    layout, order, row = eval_layout(cols["lengths"], batch_size, max_length)
    for first in range(0, int(row.max()) + 1, layout.rows):
        take = (row >= first) & (row < first + layout.rows)
        yield pack(cols, order[take], row[take] - first, layout, pad_id)


def train_batches(
    cols: dict[str, np.ndarray],
    batch_size: int,
    seed: int,
    epoch: int,
    pad_id: int,
    skip: int = 0,
    max_length: int = 0,
):
    """One epoch of stratified packed batches of one shape (see train_layout, train_plan)."""
    layout = train_layout(cols["lengths"], batch_size, max_length)
    row_of = np.asarray(layout.row_of)
    for index in train_plan(cols["lengths"], batch_size, seed, epoch)[skip:]:
        yield pack(cols, index, row_of, layout, pad_id)
