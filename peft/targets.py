"""Which layers of a model a PEFT method touches: module-path suffixes, a regex, or all-linear."""

import re
from collections.abc import Sequence

Path = tuple[str, ...]
ALL_LINEAR = "all-linear"


def split_path(path: str | Sequence[str]) -> Path:
    """ "attention/output/dense", "attention.output.dense" or a tuple -> a tuple of names."""
    if isinstance(path, str):
        return tuple(p for p in re.split(r"[/.]", path) if p)
    return tuple(path)


def target_matches(target: str, path: Sequence[str]) -> bool:
    """True when one suffix-style target names the layer at `path`."""
    wanted = split_path(target)
    return tuple(path[-len(wanted) :]) == wanted


def under(prefix: Sequence[str], path: Sequence[str]) -> bool:
    """True when `path` is `prefix` or lies below it."""
    return tuple(path[: len(prefix)]) == tuple(prefix)


def in_head(head: Sequence[str], path: Sequence[str]) -> bool:
    return any(under(split_path(h), path) for h in head)


def matches(targets: Sequence[str] | str, path: Sequence[str], head: Sequence[str] = ()) -> bool:
    """Whether the linear layer at `path` is targeted; layers of the task head never are.

    targets: module-name suffixes ("query", "output.dense"), "all-linear", or one string
    taken as a regex that must match the whole '/'-joined path (as Hugging Face peft does).
    """
    if in_head(head, path):
        return False
    if targets == ALL_LINEAR:
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, "/".join(path)) is not None
    return any(target_matches(t, path) for t in targets)


def unmatched(targets: Sequence[str] | str, paths: Sequence[Path], head=()) -> list[str]:
    """The targets that match none of `paths`."""
    each = [targets] if isinstance(targets, str) else [(t,) for t in targets]
    missing = [t for t in each if not any(matches(t, p, head) for p in paths)]
    return [t if isinstance(t, str) else t[0] for t in missing]


def check(kind: str, targets, paths: Sequence[Path], head=()) -> None:
    """Raises naming the first target that matches none of the linear layers at `paths`."""
    missing = unmatched(targets, paths, head)
    if missing:
        outside = [p for p in paths if not in_head(head, p)]
        names = sorted({"/".join(p[-2:]) if p[-1] == "dense" else p[-1] for p in outside})
        raise ValueError(
            f"{kind} target {missing[0]!r} matches no layer; available: {', '.join(names)}"
        )
