"""Trainable masks for any Flax parameter tree, and splitting a tree by its mask."""

import dataclasses
import re
from collections.abc import Sequence

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from peft.adapter import AdapterConfig
from peft.ia3 import IA3Config
from peft.lora import LoraConfig, is_target
from peft.targets import split_path, target_matches, under

Path = tuple[str, ...]


def _map_paths(fn, params):
    """A tree like `params` whose leaves are fn(path) for each leaf's path."""
    return unflatten_dict({path: fn(path) for path in flatten_dict(_as_dict(params))})


def _as_dict(tree):
    if hasattr(tree, "items"):
        return {k: _as_dict(v) for k, v in tree.items()}
    return tree


def _head_paths(params, head: Sequence[str]) -> list[Path]:
    """The '/'-split head specs; raises for one that matches no leaf of `params`."""
    leaves = list(flatten_dict(_as_dict(params)))
    specs = [split_path(h) for h in head]
    for text, spec in zip(head, specs, strict=True):
        if not any(under(spec, leaf) for leaf in leaves):
            tops = sorted({leaf[0] for leaf in leaves})
            raise ValueError(
                f"head {text!r} matches no parameter; top-level modules: {', '.join(tops)} "
                "(give head=() for a model without one)"
            )
    return specs


def _in_head(path: Path, specs: Sequence[Path]) -> bool:
    return any(under(spec, path) for spec in specs)


@dataclasses.dataclass(frozen=True)
class BitFitConfig:
    """BitFit: every bias trains. head="all": the task head trains whole (kernel too);
    "bias": only its biases, like every other layer's. only: optional regex on bias paths."""

    head: str = "all"
    only: str | None = None

    def __post_init__(self):
        if self.head not in ("all", "bias"):
            raise ValueError(f"BitFit head must be 'all' or 'bias', got {self.head!r}")


def bitfit_mask(
    params,
    *,
    train_head: bool = True,
    head: Sequence[str] = ("classifier",),
    only: str | None = None,
):
    """True for every leaf named `bias` and, with `train_head`, every leaf of the head.

    head: paths of the task head ("classifier", "classifier/bias", "head/out"); each must
    match some parameter. only: an optional regex; then only biases whose '/'-joined path it
    searches are selected (e.g. the BitFit paper's subset `only="query|intermediate"`).
    """
    specs = _head_paths(params, head) if train_head else []

    def selected(path: Path) -> bool:
        if _in_head(path, specs):
            return True
        if path[-1] != "bias":
            return False
        return only is None or re.search(only, "/".join(path)) is not None

    return _map_paths(selected, params)


def _layer_norm_rule(params, norms: Sequence[str] | None):
    """path -> whether the leaf belongs to a layer norm. norms None: any module whose name
    holds "layernorm" (case and "_" ignored: LayerNorm, sa_layer_norm); else module-path
    suffixes as LoRA targets take them ("attn_norm", "embeddings/norm"), each of which must
    match some parameter."""
    if norms is None:
        return lambda path: any("layernorm" in p.lower().replace("_", "") for p in path[:-1])
    modules = {path[:-1] for path in flatten_dict(_as_dict(params))}
    for norm in norms:
        if not any(target_matches(norm, module) for module in modules):
            raise ValueError(f"norm {norm!r} matches no module of the parameters")
    return lambda path: any(target_matches(norm, path[:-1]) for norm in norms)


def _factor_of(config, kind: str):
    """Leaves `…/<kind>/<name>` under a layer `config` targets."""
    return lambda path: len(path) > 2 and path[-2] == kind and is_target(config, path[:-2])


def trainable_mask(
    params,
    method,
    *,
    head: Sequence[str] = ("classifier",),
    norms: Sequence[str] | None = None,
):
    """A bool tree: which leaves a method trains.

    method: "full"; "head" (head only); "bitfit" or a BitFitConfig (biases + head); a
    LoraConfig (its targets' LoRA/DoRA factors + head) or "lora" (any `lora` leaf + head);
    an IA3Config or "ia3" (IA3 vectors + head); an AdapterConfig or "adapter" (adapters +
    every layer norm + head, as Houlsby et al. 2019).
    head: paths of the task head (BERT `classifier`; RoBERTa's `classifier` holds `dense`
    and `out_proj`; "classifier/bias"; () for none). A head that matches nothing is an error.
    norms: the layer norms adapters train, as module-path suffixes (ModernBERT's
    ("embeddings/norm", "attn_norm", "mlp_norm", "final_norm")); None: every module whose
    name holds "layernorm" (BERT, RoBERTa, DistilBERT, DeBERTa, ELECTRA).
    """
    if method == "full":
        return _map_paths(lambda path: True, params)
    if method == "bitfit":
        method = BitFitConfig()
    if isinstance(method, BitFitConfig):
        return bitfit_mask(params, train_head=method.head == "all", head=head, only=method.only)
    rules = {
        "head": lambda path: False,
        "lora": lambda path: "lora" in path,
        "ia3": lambda path: "ia3" in path,
    }
    if isinstance(method, LoraConfig):
        rule = _factor_of(method, "lora")
    elif isinstance(method, IA3Config):
        rule = _factor_of(method, "ia3")
    elif isinstance(method, AdapterConfig) or method == "adapter":
        is_norm = _layer_norm_rule(params, norms)
        rule = lambda path: "adapter" in path or is_norm(path)  # noqa: E731
    elif method in rules:
        rule = rules[method]
    else:
        raise ValueError(
            f"unknown method {method!r}; use 'full', 'head', 'bitfit', 'lora', 'ia3', "
            "'adapter', a BitFitConfig, LoraConfig, IA3Config or AdapterConfig"
        )
    if method != "head" and not any(rule(p) for p in flatten_dict(_as_dict(params))):
        raise ValueError(
            f"{method!r} selects no parameter: build the model with peft.with_lora/with_ia3 "
            "(or the adapter config) before making its mask"
        )
    specs = _head_paths(params, head)
    return _map_paths(lambda path: _in_head(path, specs) or rule(path), params)


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
