"""Length-bucketed, fixed-shape numpy batches from tokenized datasets (train and eval)."""

from collections.abc import Iterator

import datasets
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.data import packing as packing_

Batch = dict[str, np.ndarray]
Plan = list[tuple[int, np.ndarray]]  # (padded length, example indices) per batch
# Dataset column and batch field of a distillation teacher's logits: [examples, num_labels]
# per batch ([rows, E, num_labels] packed), zero on padding, gathered like the labels.
SOFT_TARGETS = "teacher_logits"


def bucket_lengths(max_length: int) -> tuple[int, ...]:
    """Five padded lengths: 1/8, 1/4, 1/2, 3/4 of max_length (rounded up to 8) and max_length.

    128 -> (16, 32, 64, 96, 128); 512 -> (64, 128, 256, 384, 512). Five shapes mean five XLA
    compiles per jitted step. The short end is geometric for short-text tasks (SST-2 train:
    median 10 tokens; computed/real tokens 1.67 with these, 2.53 with (32, 64, 96, 128),
    9.6 unbucketed); the long end linear for paragraphs (IMDb at 512: 1.20).
    """
    fractions = ((1, 8), (1, 4), (1, 2), (3, 4))
    steps = {-(-max_length * num // (den * 8)) * 8 for num, den in fractions}
    return tuple(sorted({min(step, max_length) for step in steps} | {max_length}))


def _columns(dataset: datasets.Dataset) -> dict[str, np.ndarray]:
    """Flat token arrays of a tokenized dataset: lengths [n], offsets [n], ids [total + 1]."""
    table = dataset.with_format("arrow")[:]
    ids = table.column("input_ids").combine_chunks()
    lengths = ids.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    # A trailing 0 lets padded positions gather a valid (then masked) element.
    cols = {
        "lengths": lengths,
        "offsets": np.cumsum(lengths) - lengths,
        "input_ids": np.append(ids.flatten().to_numpy(zero_copy_only=False), 0),
        "label": table.column("label").to_numpy(),
    }
    if "token_type_ids" in table.column_names:
        types = table.column("token_type_ids").combine_chunks().flatten()
        cols["token_type_ids"] = np.append(types.to_numpy(zero_copy_only=False), 0)
    if SOFT_TARGETS in table.column_names:  # a distillation teacher's logits [n, num_labels]
        soft = table.column(SOFT_TARGETS).combine_chunks().flatten()
        cols[SOFT_TARGETS] = soft.to_numpy(zero_copy_only=False).astype(np.float32)
        cols[SOFT_TARGETS] = cols[SOFT_TARGETS].reshape(len(lengths), -1)
    return cols


def _buckets_of(lengths: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """lengths: [n] -> index of the smallest bucket >= each length."""
    if list(buckets) != sorted(set(buckets)):
        raise ValueError(f"buckets must be strictly increasing, got {buckets}")
    which = np.searchsorted(np.asarray(buckets), lengths, side="left")
    if len(lengths) and which.max() == len(buckets):
        row = int(np.argmax(lengths))
        raise ValueError(
            f"example {row} has {lengths[row]} tokens, more than the largest bucket {buckets[-1]}"
        )
    return which


def train_plan(
    lengths: np.ndarray, batch_size: int, buckets: tuple[int, ...], seed: int, epoch: int
) -> Plan:
    """Shuffled full batches of example indices, each padded to one bucket length.

    Buckets are filled from the shortest: each bucket's examples plus the leftovers carried from
    the shorter buckets are shuffled and cut into full batches; the < batch_size leftovers move
    up to the next bucket (padded longer, never truncated). Only the last bucket's leftovers,
    < batch_size examples, are dropped, so there are exactly n // batch_size batches, every
    example appears at most once, and which ones are dropped changes with the epoch.
    """
    rng = np.random.default_rng((seed, epoch))
    which = _buckets_of(lengths, buckets)
    plan, carry = [], np.zeros(0, np.int64)
    for b, length in enumerate(buckets):
        pool = rng.permutation(np.concatenate([carry, np.flatnonzero(which == b)]))
        full = len(pool) // batch_size * batch_size
        plan += [(length, chunk) for chunk in pool[:full].reshape(-1, batch_size)]
        carry = pool[full:]
    return [plan[i] for i in rng.permutation(len(plan))]


def eval_plan(lengths: np.ndarray, batch_size: int, buckets: tuple[int, ...]) -> Plan:
    """Every example once, sorted by length, in batches padded to the smallest fitting bucket."""
    which = _buckets_of(lengths, buckets)
    order = np.argsort(lengths, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [(buckets[which[chunk[-1]]], chunk) for chunk in chunks]


def pad_batch(
    cols: dict[str, np.ndarray], index: np.ndarray, length: int, batch_size: int, pad_id: int
) -> Batch:
    """Examples `index` [r <= batch_size] -> a batch of batch_size rows padded to length.

    Rows past r are padding: input_ids pad_id, attention_mask 0, label 0, weight 0, index -1.
    """
    rows = len(index)
    lengths = cols["lengths"][index]
    mask = np.arange(length) < lengths[:, None]  # [r, length]
    gather = np.where(mask, cols["offsets"][index][:, None] + np.arange(length), -1)

    def padded(values: np.ndarray, fill: int) -> np.ndarray:
        out = np.full((batch_size, length), fill, np.int32)
        out[:rows] = np.where(mask, values[gather], fill)
        return out

    attention_mask = np.zeros((batch_size, length), np.int32)
    attention_mask[:rows] = mask
    # The packed-row inputs of one example per row (bertjax/data/packing.py): the same logits.
    position_ids = np.where(attention_mask > 0, np.arange(length), 0).astype(np.int32)
    types = cols.get("token_type_ids")
    label = cols["label"]
    labels = np.zeros(batch_size, np.float32 if label.dtype.kind == "f" else np.int32)
    labels[:rows] = label[index]
    batch = {
        "input_ids": padded(cols["input_ids"], pad_id),
        "attention_mask": attention_mask,
        "token_type_ids": padded(types, 0) if types is not None else np.zeros_like(attention_mask),
        "segment_ids": attention_mask,
        "position_ids": position_ids,
        "cls_index": np.zeros((batch_size, 1), np.int32),
        "labels": labels,
        "weights": (np.arange(batch_size) < rows).astype(np.float32),
        "index": np.concatenate([index, np.full(batch_size - rows, -1)]).astype(np.int32),
    }
    if SOFT_TARGETS in cols:
        soft = cols[SOFT_TARGETS]
        batch[SOFT_TARGETS] = np.zeros((batch_size, soft.shape[1]), np.float32)
        batch[SOFT_TARGETS][:rows] = soft[index]
    return batch


def num_train_batches(dataset: datasets.Dataset, batch_size: int) -> int:
    """Train steps per epoch: len(dataset) // batch_size, whatever the buckets (see train_plan)."""
    return len(dataset) // batch_size


def train_batches(
    dataset: datasets.Dataset,
    batch_size: int,
    buckets: tuple[int, ...],
    seed: int,
    epoch: int,
    *,
    pad_id: int,
    skip: int = 0,
    packing: bool = False,
) -> Iterator[Batch]:
    """One epoch of shuffled bucketed batches [batch_size, bucket] (see train_plan), or with
    `packing` stratified packed batches of one shape (bertjax/data/packing.py).

    Deterministic in (seed, epoch). `skip` drops the first batches without padding them
    (resuming mid-epoch). pad_id is the tokenizer's pad_token_id (BERT 0, RoBERTa 1).
    """
    cols = _columns(dataset)
    if len(dataset) < batch_size:
        raise ValueError(
            f"train set has {len(dataset)} examples, fewer than batch_size {batch_size}"
        )
    if packing:
        return packing_.train_batches(cols, batch_size, seed, epoch, pad_id, skip, buckets[-1])
    plan = train_plan(cols["lengths"], batch_size, buckets, seed, epoch)
    return (pad_batch(cols, index, length, batch_size, pad_id) for length, index in plan[skip:])


def eval_batches(
    dataset: datasets.Dataset,
    batch_size: int,
    buckets: tuple[int, ...],
    *,
    pad_id: int,
    packing: bool = False,
) -> Iterator[Batch]:
    """Every example exactly once, length-sorted; the last batch is filled with padding rows.
    With `packing`, packed batches of one shape (bertjax/data/packing.py).

    Use `weights` (0 for padding rows) to mask them and `index` (-1 for padding) to put
    predictions back in dataset order: `out[batch["index"][w > 0]] = pred[w > 0]`.
    """
    cols = _columns(dataset)
    if packing:
        return packing_.eval_batches(cols, batch_size, pad_id, buckets[-1])
    plan = eval_plan(cols["lengths"], batch_size, buckets)
    return (pad_batch(cols, index, length, batch_size, pad_id) for length, index in plan)


def padding_stats(
    dataset: datasets.Dataset,
    batch_size: int,
    buckets: tuple[int, ...],
    train: bool = True,
    packing: bool = False,
) -> dict[str, float]:
    """For logging: distinct batch shapes and the padded fraction of all tokens of an epoch
    (epoch 0 for train); `computed_per_real` is tokens computed per real token.

    `pad_fraction_unbucketed` is the same fraction when every batch is padded to buckets[-1].
    """
    cols = _columns(dataset)
    lengths = cols["lengths"]
    if packing and train:  # one shape: the layout's
        layout = packing_.train_layout(lengths, batch_size, buckets[-1])
        plan = packing_.train_plan(lengths, batch_size, 0, 0)
        real, used = int(lengths[plan].sum()), len(plan)
        slots, shapes = used * layout.rows * layout.length, [layout.length]
    elif packing:
        batches = packing_.eval_batches(cols, batch_size, 0, buckets[-1])
        shapes = [b["input_ids"].shape for b in batches]
        real, used = int(lengths.sum()), len(shapes)
        slots = sum(rows * length for rows, length in shapes)
    else:
        if train:
            plan = train_plan(lengths, batch_size, buckets, seed=0, epoch=0)
        else:
            plan = eval_plan(lengths, batch_size, buckets)
        real = sum(int(lengths[index].sum()) for _, index in plan)
        slots = sum(batch_size * length for length, _ in plan)
        shapes, used = [length for length, _ in plan], len(plan)
    return {
        "num_batches": used,
        "num_shapes": len(set(shapes)),
        "pad_fraction": 1 - real / max(slots, 1),
        "computed_per_real": slots / max(real, 1),
        "pad_fraction_unbucketed": 1 - real / max(used * batch_size * buckets[-1], 1),
    }


def abstract_batch(
    batch_size: int,
    length: int,
    num_labels: int,
    per_row: int | None = None,
    soft_targets: bool = False,
) -> dict:
    """Shapes and dtypes of a training batch as train_batches makes it (for jax AOT lowering):
    batch_size rows of `length`; packed rows hold per_row examples (None: unpacked);
    `soft_targets`: with a teacher's logits (SOFT_TARGETS), when distilling."""
    ints = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    label_dtype = jnp.float32 if num_labels == 1 else jnp.int32
    examples = (batch_size,) if per_row is None else (batch_size, per_row)
    soft = jax.ShapeDtypeStruct((*examples, num_labels), jnp.float32)
    return dict(
        **({SOFT_TARGETS: soft} if soft_targets else {}),
        input_ids=ints,
        attention_mask=ints,
        token_type_ids=ints,
        segment_ids=ints,
        position_ids=ints,
        cls_index=jax.ShapeDtypeStruct((batch_size, per_row or 1), jnp.int32),
        labels=jax.ShapeDtypeStruct(examples, label_dtype),
        weights=jax.ShapeDtypeStruct(examples, jnp.float32),
    )


def longest_batch(
    dataset: datasets.Dataset,
    batch_size: int,
    buckets: tuple[int, ...],
    num_labels: int,
    packing: bool = False,
) -> dict:
    """abstract_batch of the largest training batch: the packed layout, or buckets[-1]
    (with the teacher's logits when the dataset has them)."""
    soft = SOFT_TARGETS in dataset.column_names
    if not packing:
        return abstract_batch(batch_size, buckets[-1], num_labels, soft_targets=soft)
    layout = packing_.train_layout(_columns(dataset)["lengths"], batch_size, buckets[-1])
    return abstract_batch(layout.rows, layout.length, num_labels, layout.per_row, soft)
