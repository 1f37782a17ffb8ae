"""Runs trained together: which configs may share one program, their shared frozen base,
and how one step's members are split into calls of the step."""

import hashlib
import json

import numpy as np

import peft
from bertjax import runs
from bertjax.train.build import Setup, build

MEMBER_FIELDS = ("optim.lr", "train.seed")  # what may differ between runs trained together
NAMING_FIELDS = ("name", "workdir")


def group_key(config) -> str:
    """Configs with equal keys can train together: they differ only in MEMBER_FIELDS and
    naming."""
    resolved = runs.without(runs.config_dict(config), NAMING_FIELDS + MEMBER_FIELDS)
    return json.dumps(resolved, sort_keys=True)


def check_group(configs: list) -> None:
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError("runs trained together may differ only in optim.lr and train.seed")
    if len(configs) > 1:
        check_vectorizable(configs[0])


def check_vectorizable(config) -> None:
    if config.peft.method == "full":
        raise ValueError(
            "--vectorize needs a PEFT method (head, bitfit, lora, adapter): full fine-tuning "
            "would hold a copy of the whole model per run; drop --vectorize"
        )


def shared_setups(members: list[runs.Run]) -> list[Setup]:
    """Each run's Setup (built once per seed), all on one copy of the frozen base."""
    by_seed, first = {}, {}
    for m in members:
        seed = m.config.train.seed
        if seed not in by_seed:
            setup = by_seed[seed] = build(m.config)
            base = first.setdefault(setup.base_hash, setup)
            if base is not setup:
                _, frozen = peft.partition(base.params, base.mask)
                setup.params = peft.combine(frozen, peft.split(setup.params, setup.mask))
    return [by_seed[m.config.train.seed] for m in members]


def fingerprint(dataset) -> str:
    """sha256 of a tokenized split's token ids and labels (equal splits share evaluation)."""
    table = dataset.with_format("arrow")[:]
    digest = hashlib.sha256()
    for name in sorted(table.column_names):
        column = table.column(name).combine_chunks()
        if hasattr(column, "value_lengths"):
            digest.update(column.value_lengths().to_numpy(zero_copy_only=False).tobytes())
            column = column.flatten()
        digest.update(name.encode() + column.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def _slots(n: int, cap: int) -> int:
    """Runs in one call, rounded up to a power of two (≤ cap): few compiled shapes."""
    return min(1 << (n - 1).bit_length(), cap)


def split(idx: np.ndarray, cap: int) -> list[np.ndarray]:
    return np.array_split(idx, -(-len(idx) // cap))


def plan_calls(groups: list[np.ndarray], k: int, cap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(take, put) member indices of each call of one step.

    groups: members whose batches share a length; each is split into calls of ≤ cap members,
    padded to `_slots` by repeating a member in `take` whose result `put` drops (index k).
    """
    calls = []
    for idx in groups:
        for part in split(idx, cap):
            pad = _slots(len(part), cap) - len(part)
            take = np.concatenate([part, np.full(pad, part[0])]).astype(np.int32)
            put = np.concatenate([part, np.full(pad, k)]).astype(np.int32)
            calls.append((take, put))
    return calls


def step_calls(shapes: dict, of_seed: dict, k: int, cap: int) -> list | None:
    """The calls (take, put) of one step (see `plan_calls`), or None for one call of the
    whole stacked state. shapes: the input shapes of each seed's batch (members share their
    seed's batch; packed rows also differ in examples per row); of_seed: seed -> member
    indices. Members whose batches differ in shape cannot share a call."""
    by_shape = {}
    for seed, shape in shapes.items():
        by_shape.setdefault(shape, []).append(seed)
    if len(by_shape) == 1 and cap == k:
        return None
    same_shape = [np.concatenate([of_seed[s] for s in seeds]) for seeds in by_shape.values()]
    return plan_calls(same_shape, k, cap)
