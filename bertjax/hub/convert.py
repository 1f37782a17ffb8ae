"""Pure conversion between Hugging Face state dicts and Flax parameter trees."""

import re

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

# Flax leaf name -> (HF leaf name, transpose?). Everything else keeps its name.
_LEAF_RULES = {
    "kernel": ("weight", True),
    "scale": ("weight", False),
    "embedding": ("weight", False),
}
_LEGACY = {"gamma": "weight", "beta": "bias"}  # old TF-converted LayerNorm names
_BUFFERS = ("position_ids", "embeddings.token_type_ids")  # registered buffers, not weights


def hf_name(path: tuple[str, ...]) -> str:
    """('bert', 'encoder', 'layer', '0', 'attention', 'self', 'query', 'kernel')
    -> 'bert.encoder.layer.0.attention.self.query.weight'."""
    leaf = _LEAF_RULES.get(path[-1], (path[-1], False))[0]
    return ".".join((*path[:-1], leaf))


def clean_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops buffers and renames legacy LayerNorm gamma/beta to weight/bias."""
    cleaned = {}
    for name, value in state.items():
        if name.endswith(_BUFFERS):
            continue
        head, _, leaf = name.rpartition(".")
        cleaned[f"{head}.{_LEGACY.get(leaf, leaf)}" if head else name] = value
    return cleaned


def align_prefix(
    state: dict[str, np.ndarray], prefix: str, encoder_keys: tuple[str, ...], bare: bool
) -> dict[str, np.ndarray]:
    """Strips (bare encoder) or adds (classifier) `prefix.` ("bert.", "distilbert.") on the
    keys of the encoder, whose top-level names are `encoder_keys`; other keys stay."""
    roots = tuple(f"{key}." for key in encoder_keys)
    aligned = {}
    for name, value in state.items():
        root, _, rest = name.partition(".")
        if bare and root == prefix and rest.startswith(roots):
            name = rest
        elif not bare and name.startswith(roots):
            name = f"{prefix}.{name}"
        aligned[name] = value
    return aligned


def hf_to_flax(
    state: dict[str, np.ndarray], target: dict
) -> tuple[dict, list[tuple[str, ...]], list[str]]:
    """Fills the tree `target` (arrays or ShapeDtypeStructs) from an HF state dict.

    Returns (params, missing flax paths, unused HF keys). Only paths found in `state` are
    in `params`. A found key whose shape differs from the target's is an error.
    """
    flat_target = flatten_dict(target)
    found, missing = {}, []
    for path, spec in flat_target.items():
        name = hf_name(path)
        if name not in state:
            missing.append(path)
            continue
        value = np.asarray(state[name])
        if _LEAF_RULES.get(path[-1], (None, False))[1]:
            value = value.T
        if value.shape != tuple(spec.shape):
            expected = spec.shape[::-1] if path[-1] == "kernel" else spec.shape
            raise ValueError(
                f"checkpoint key {name!r} has shape {tuple(state[name].shape)} but the model "
                f"expects {tuple(expected)}"
            )
        found[path] = value.astype(spec.dtype)
    used = {hf_name(p) for p in found}
    unused = sorted(k for k in state if k not in used)
    return unflatten_dict(found), missing, unused


def flax_to_hf(params: dict) -> dict[str, np.ndarray]:
    """The inverse of hf_to_flax: HF names, Linear weights as [out, in]."""
    state = {}
    for path, value in flatten_dict(params).items():
        value = np.asarray(value)
        if _LEAF_RULES.get(path[-1], (None, False))[1]:
            value = value.T
        state[hf_name(path)] = np.ascontiguousarray(value)
    return state


def keep_layers(
    state: dict[str, np.ndarray], layer_prefix: str, layers: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """The state dict with only encoder `layers` (keys "[….]{layer_prefix}.{i}.…"),
    renumbered 0..n-1 in the given order; keys outside the layers stay."""
    pattern = re.compile(rf"(^|\.){re.escape(layer_prefix)}\.(\d+)\.")
    new_index = {old: new for new, old in enumerate(layers)}
    kept = {}
    for name, value in state.items():
        match = pattern.search(name)
        if match is None:
            kept[name] = value
        elif int(match[2]) in new_index:
            start, end = match.span(2)
            kept[f"{name[:start]}{new_index[int(match[2])]}{name[end:]}"] = value
    return kept
