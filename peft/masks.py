"""Trainable masks for any Flax parameter tree, and splitting a tree by its mask."""

import re
from collections.abc import Sequence

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from peft.adapter import AdapterConfig
from peft.lora import LoraConfig

Path = tuple[str, ...]


def _map_paths(fn, params):
    """A tree like `params` whose leaves are fn(path) for each leaf's path."""
    return unflatten_dict({path: fn(path) for path in flatten_dict(_as_dict(params))})


def _as_dict(tree):
    if hasattr(tree, "items"):
        return {k: _as_dict(v) for k, v in tree.items()}
    return tree


def _in_head(path: Path, head: Sequence[str]) -> bool:
    return path[0] in head


def bitfit_mask(
    params,
    *,
    train_head: bool = True,
    head: Sequence[str] = ("classifier",),
    only: str | None = None,
):
    """True for every leaf named `bias` and, with `train_head`, every leaf of the head.

    head: names of top-level modules that form the task head. only: an optional regex;
    then only biases whose '/'-joined path it searches are selected (e.g. the BitFit paper's
    subset `only="query|intermediate"`).
    """

    def selected(path: Path) -> bool:
        if train_head and _in_head(path, head):
            return True
        if path[-1] != "bias":
            return False
        return only is None or re.search(only, "/".join(path)) is not None

    return _map_paths(selected, params)


def _is_layer_norm(path: Path) -> bool:
    return any("layernorm" in p.lower().replace("_", "") for p in path)


def trainable_mask(params, method, *, head: Sequence[str] = ("classifier",)):
    """A bool tree: which leaves a method trains.

    method: "full"; "head" (head only); "bitfit" (biases + head); a LoraConfig or "lora"
    (LoRA factors + head); an AdapterConfig or "adapter" (adapters + every LayerNorm + head).
    head: top-level modules of the task head (BERT `classifier`; RoBERTa's `classifier`
    holds `dense` and `out_proj`).
    """
    if method == "bitfit":
        return bitfit_mask(params, head=head)
    rules = {
        "full": lambda path: True,
        "head": lambda path: False,
        "lora": lambda path: "lora" in path,
        "adapter": lambda path: "adapter" in path or _is_layer_norm(path),
    }
    name = {LoraConfig: "lora", AdapterConfig: "adapter"}.get(type(method), method)
    if name not in rules:
        raise ValueError(
            f"unknown method {method!r}; use 'full', 'head', 'bitfit', 'lora', 'adapter', "
            "a LoraConfig or an AdapterConfig"
        )
    return _map_paths(lambda path: _in_head(path, head) or rules[name](path), params)


def check_mask(params, mask) -> None:
    """Raises when `mask` is not a bool tree with exactly the paths of `params`."""
    have = set(flatten_dict(_as_dict(params)))
    got = flatten_dict(_as_dict(mask))
    if set(got) != have:
        extra = sorted("/".join(p) for p in set(got) - have)
        lacking = sorted("/".join(p) for p in have - set(got))
        raise ValueError(
            f"mask does not match params: missing {lacking[:5]}, unexpected {extra[:5]}"
        )
    not_bool = [("/".join(p)) for p, v in got.items() if not isinstance(v, bool | np.bool_)]
    if not_bool:
        raise ValueError(f"mask leaves must be bools; not at {not_bool[:5]}")


def split(params, mask):
    """The sub-tree of leaves where `mask` is True (frozen leaves absent, not None)."""
    check_mask(params, mask)
    flat_mask = flatten_dict(_as_dict(mask))
    flat = flatten_dict(_as_dict(params))
    return unflatten_dict({p: v for p, v in flat.items() if flat_mask[p]})


def partition(params, mask):
    """(trainable, frozen): two disjoint sub-trees that `combine` joins back."""
    inverse = jax.tree_util.tree_map(lambda m: not m, _as_dict(mask))
    return split(params, mask), split(params, inverse)


def combine(base, small):
    """The union of two trees, `small`'s leaves winning: combine(*partition(p, m)) == p,
    and combine(base_params, trainable_only) restores an adapter-only checkpoint."""
    flat = flatten_dict(_as_dict(base))
    flat.update(flatten_dict(_as_dict(small)))
    return unflatten_dict(flat)


def count(params, mask=None) -> int:
    """Number of scalars in `params`, or in its leaves where `mask` is True."""
    tree = params if mask is None else split(params, mask)
    return sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(tree))
