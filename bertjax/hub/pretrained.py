"""from_pretrained / from_config / save_pretrained: Hugging Face folders and hub ids."""

import dataclasses
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bertjax.hub import encoder, hf_peft
from bertjax.hub.convert import (
    align_prefix,
    clean_state_dict,
    flax_to_hf,
    hf_to_flax,
    keep_layers,
)
from bertjax.models.config import ModelConfig
from bertjax.models.families import Family, build, family_of, model_config_from_hf
from bertjax.models.layers import PeftConfig
from peft.adapter import AdapterConfig
from peft.dora import reset_magnitudes
from peft.ia3 import IA3Config, merge_ia3
from peft.lora import LoraConfig
from peft.merge import merge_lora

log = logging.getLogger("bertjax")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "sentencepiece*",
]


def resolve(path_or_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a hub id, downloaded with huggingface_hub."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists():
        raise NotADirectoryError(f"{text}: expected a model folder, found a file")
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{text}: no such model folder")
    from huggingface_hub import snapshot_download  # only needed for hub ids

    try:
        return Path(snapshot_download(text, allow_patterns=HUB_FILES))
    except Exception as err:  # offline, unknown id, gated repo: all end the same way
        raise FileNotFoundError(
            f"{text!r} is not a local folder and could not be fetched from the Hugging Face "
            f"hub ({type(err).__name__}); check the id, or download it while online"
        ) from None


def read_hf_config(folder: Path) -> dict:
    file = folder / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None


def read_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """Weights of `folder`: model.safetensors if present, else pytorch_model.bin."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            reader = _read_safetensors if name.endswith(".safetensors") else _read_torch_bin
            return reader(folder / name)
    raise FileNotFoundError(f"{folder}: no weights (looked for {' or '.join(WEIGHT_FILES)})")


def _corrupt(file: Path, err: BaseException) -> ValueError:
    reason = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
    return ValueError(
        f"{file}: unreadable weights file, truncated or corrupt ({reason}); download or "
        "save the checkpoint again"
    )


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(file)
    except SafetensorError as err:
        raise _corrupt(file, err) from None


def _read_torch_bin(file: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{file}: reading pytorch_model.bin needs torch (pip install 'bertjax[torch]'), "
            "or convert the checkpoint to model.safetensors"
        ) from None
    try:
        # weights_only: a checkpoint must never run code while loading.
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0].split(". ")[0]
        raise ValueError(
            f"{file}: refused to load, not a plain tensor checkpoint ({reason})"
        ) from None
    except (RuntimeError, EOFError) as err:  # a truncated zip archive, an empty file
        raise _corrupt(file, err) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file}: refused to load, expected a dict of tensors")
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def _init_params(model, seed: int):
    tokens = np.zeros((1, 8), np.int32)
    return jax.jit(model.init)(jax.random.key(seed), tokens)["params"]


def _traced_init(model):
    """model.init(key, tokens)["params"] traced once (Flax's tracing of a whole model costs
    ~0.5 s): its abstract params (`out_info`) and its jaxpr, for `_init_leaves`."""
    tokens = np.zeros((1, 8), np.int32)
    return jax.jit(lambda key: model.init(key, tokens)["params"]).trace(jax.random.key(0))


def _init_leaves(traced, seed: int, paths: list[tuple[str, ...]]) -> dict:
    """{path: value} of a seeded init's leaves at `paths` only (traced: `_traced_init`): the
    values `_init_params` gives them, but XLA drops the rest of the init as dead code, so a
    new head does not draw (nor compile the drawing of) the 30k × hidden word embeddings.
    The init's jaxpr is replayed rather than the model traced again."""
    init = jax.extend.core.jaxpr_as_fun(traced.jaxpr)
    leaves = jax.tree_util.tree_flatten_with_path(traced.out_info)[0]
    index = {tuple(k.key for k in path): i for i, (path, _) in enumerate(leaves)}

    def chosen(key):
        values = init(key)
        return {"/".join(p): values[index[p]] for p in paths}

    values = jax.jit(chosen)(jax.random.key(seed))
    return {p: values["/".join(p)] for p in paths}


def _check_peft(config: ModelConfig, peft: PeftConfig) -> None:
    """LoRA/IA3 targets are checked by peft.Peft when the model is first initialised."""
    if isinstance(peft, AdapterConfig):
        peft.bottleneck(config.hidden_size)
    elif isinstance(peft, LoraConfig) and peft.rank > config.hidden_size:
        # a rank past a layer's width adds more weights than the layer has (a large one
        # used to run the machine out of memory while initialising)
        raise ValueError(
            f"peft.lora.rank={peft.rank} is above the model's width ({config.hidden_size}); "
            f"use a rank well below it (e.g. 8), or peft.method=full"
        )
    elif peft is not None and not isinstance(peft, LoraConfig | IA3Config):
        raise TypeError(
            f"peft must be a LoraConfig, an IA3Config, an AdapterConfig or None, got {peft!r}"
        )


def from_config(
    hf_config,
    num_labels: int | None = None,
    peft: PeftConfig = None,
    seed: int = 0,
    dtype=jnp.float32,
):
    """A randomly initialised model (seeded) for a `transformers` config or its dict.

    Returns (model, params); params are float32, `dtype` is the computation dtype.
    """
    config = model_config_from_hf(hf_config)
    model = build(config, num_labels, peft, dtype)
    _check_peft(config, peft)
    return model, _init_params(model, seed)


def _is_new_ok(path: tuple[str, ...], family: Family) -> bool:
    """Parameters a base checkpoint may lack: the task head, BERT's pooler, PEFT weights."""
    return (
        path[0] in family.head + family.optional
        or "pooler" in path
        or bool({"lora", "ia3", "adapter"} & set(path))
    )


def _is_droppable(name: str, model, family: Family) -> bool:
    """Checkpoint keys a model may leave unused, as transformers does (with a log line)."""
    bare = getattr(model, "num_labels", None) is None
    return (
        name.startswith(family.pretraining_heads)
        or ".pooler." in f".{name}"
        or (bare and name.partition(".")[0] in family.head)
    )


def from_pretrained(
    path_or_id,
    num_labels: int | None = None,
    peft: PeftConfig = None,
    dtype=jnp.float32,
    seed: int = 0,
    announce_new: bool = True,
    base=None,
    remat: bool | str = False,
    *,
    layers: tuple[int, ...] | None = None,
):
    """Loads a Hugging Face checkpoint (folder or hub id) into (model, params); remat: see
    bertjax.models.families.build.

    layers: keep only these encoder layers of the checkpoint (increasing indices, e.g.
    (0, 2, 4) of 6), renumbered 0..n-1: a compact student that starts pretrained, as
    DistilBERT was initialised. The model's config then says n layers (and each kept
    ModernBERT layer keeps its global/local kind), so save_pretrained writes an ordinary
    n-layer checkpoint. None: every layer.

    The checkpoint's classification head is loaded when it has one; otherwise the head is
    initialised from `seed` and logged (a warning; debug with `announce_new=False`, for
    callers that restore trained weights over them). Every other key must be used and every
    encoder weight present, else a ValueError lists them.

    A Hugging Face peft adapter folder (adapter_config.json + adapter_model.safetensors,
    LoRA, DoRA or IA3, written by `export.py` or by `PeftModel.save_pretrained`) loads its
    base (`base_model_name_or_path`, or `base`) plus the adapter and its head.
    """
    folder = resolve(path_or_id)
    if hf_peft.is_adapter_dir(folder):
        return _from_adapter(folder, num_labels, peft, dtype, seed, base, layers)
    config = model_config_from_hf(read_hf_config(folder))
    family = family_of(config.model_type)
    if layers is not None:
        layers = check_layers(layers, config.num_hidden_layers, f"{folder}: layers")
        config = with_layers(config, family, layers, folder)
    model = build(config, num_labels, peft, dtype, remat)
    _check_peft(config, peft)
    state = clean_state_dict(read_state_dict(folder))
    if layers is not None:
        state = keep_layers(state, family.layer_prefix, layers)
    state = align_prefix(state, family.prefix, family.encoder_keys, bare=num_labels is None)
    traced = _traced_init(model)
    target = traced.out_info
    loaded, missing, unused = hf_to_flax(state, target)

    not_allowed = ["/".join(p) for p in missing if not _is_new_ok(p, family)]
    if not_allowed:
        raise ValueError(
            f"{folder}: checkpoint lacks {len(not_allowed)} weights: "
            + ", ".join(not_allowed[:10])
            + (" …" if len(not_allowed) > 10 else "")
        )
    bad_unused = [k for k in unused if not _is_droppable(k, model, family)]
    if bad_unused:
        raise ValueError(
            f"{folder}: checkpoint keys not used by the model: " + ", ".join(bad_unused)
        )
    if unused:
        log.info(
            "%s: unused checkpoint keys (pretraining heads/pooler): %s", folder, ", ".join(unused)
        )
    if missing:
        flat = flatten_dict(loaded)
        flat.update(_init_leaves(traced, seed, missing))
        loaded = unflatten_dict(flat)
        if isinstance(peft, LoraConfig) and peft.use_dora:  # magnitudes of the loaded kernels
            loaded = reset_magnitudes(loaded, peft)
        level = logging.WARNING if announce_new else logging.DEBUG
        log.log(
            level, "newly initialised (seed %d, not in %s): %s", seed, folder, _summarise(missing)
        )
    return model, jax.device_put(loaded)  # no compiled program per leaf, as jnp.asarray has


def check_layers(layers, num_layers: int | None, field: str = "layers") -> tuple[int, ...]:
    """`layers` as a tuple of ints, or a one-line ValueError naming `field`: empty, not
    integers, repeated, unsorted, or (given the checkpoint's `num_layers`) out of range."""
    values = (layers,) if isinstance(layers, int) else tuple(layers)
    fix = "give increasing layer indices, e.g. 0,2,4"
    if not values:
        raise ValueError(f"{field}=() is empty; {fix}, or leave it unset for every layer")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in values):
        raise ValueError(f"{field}={values!r} must hold integers; {fix}")
    if len(set(values)) < len(values):
        raise ValueError(f"{field}={values!r} repeats a layer; {fix}")
    if list(values) != sorted(values):
        raise ValueError(f"{field}={values!r} is not sorted; {fix}")
    top = num_layers - 1 if num_layers is not None else None
    if values[0] < 0 or (top is not None and values[-1] > top):
        where = f"0..{top} (the checkpoint has {num_layers})" if top is not None else ">= 0"
        raise ValueError(f"{field}={values!r} is out of range: layers are {where}")
    return values


def with_layers(config, family: Family, layers: tuple[int, ...], folder: Path):
    """The family config of `folder`'s checkpoint keeping only `layers` (checked by
    check_layers); a one-line error where the family's layer 0 must stay."""
    if family.first_layer_differs and layers[0] != 0:
        raise ValueError(
            f"{folder}: layers={layers!r} must keep layer 0: {config.model_type}'s first "
            "layer is built unlike the others (e.g. no attention LayerNorm)"
        )
    per_layer = {name: tuple(getattr(config, name)[i] for i in layers) for name in family.per_layer}
    return dataclasses.replace(config, num_hidden_layers=len(layers), **per_layer)


def _from_adapter(folder: Path, num_labels, peft, dtype, seed: int, base, layers=None):
    if layers is not None:
        raise ValueError(
            f"{folder}: layers= cannot select layers of a peft adapter folder; export the "
            "run merged (a plain checkpoint) and select its layers"
        )
    config, state = hf_peft.read_adapter(folder)
    method = hf_peft.method_of(config, state, folder)
    if peft is not None:
        method = _compatible(method, peft, folder)
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{folder / hf_peft.CONFIG_FILE}: no base_model_name_or_path; pass base=<model>"
        )
    head = [v for k, v in state.items() if k.endswith(("classifier.weight", "out_proj.weight"))]
    if num_labels is None and head:
        num_labels = int(head[0].shape[0])
    model, params = from_pretrained(base, num_labels, peft=method, dtype=dtype, seed=seed)
    adapter = hf_peft.from_hf_state(state, method, params, folder)
    flat = flatten_dict(params)
    flat.update(flatten_dict(jax.tree_util.tree_map(jnp.asarray, adapter)))
    log.info("%s: adapter on %s (%s)", folder, base, method)
    return model, unflatten_dict(flat)


def _compatible(found, wanted, folder):
    """The adapter's method, with `wanted`'s dropout; an error when they differ otherwise."""
    same_kind = type(found) is type(wanted)
    if isinstance(found, LoraConfig) and same_kind:
        keys = ("rank", "alpha", "use_dora")
        differ = [k for k in keys if getattr(found, k) != getattr(wanted, k)]
        if not differ:
            return dataclasses.replace(found, dropout=wanted.dropout)
    elif same_kind:
        return found
    else:
        differ = ["method"]
    raise ValueError(
        f"{folder}: the adapter is {found}, but the config asks for {wanted} "
        f"({', '.join(differ)} differ); make the config match the adapter"
    )


def _summarise(paths: list[tuple[str, ...]]) -> str:
    """Names plain paths; counts LoRA/adapter leaves instead of listing each layer's."""
    peft_paths = [p for p in paths if {"lora", "ia3", "adapter"} & set(p)]
    plain = ["/".join(p) for p in paths if p not in peft_paths]
    if peft_paths:
        plain.append(f"{len(peft_paths)} PEFT weights")
    return ", ".join(plain)


def hf_config_dict(config, num_labels: int | None, label_names: list[str] | None = None) -> dict:
    """A `config.json` for transformers' {Bert,DistilBert,…}Model or …ForSequenceClassification."""
    family = family_of(config.model_type)
    arch = family.architecture
    out = family.config_to_hf(config)
    if num_labels is None:
        out["architectures"] = [f"{arch}Model"]
        return out
    names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
    out["architectures"] = [f"{arch}ForSequenceClassification"]
    out["id2label"] = {str(i): n for i, n in enumerate(names)}
    out["label2id"] = {n: i for i, n in enumerate(names)}
    if num_labels == 1:
        out["problem_type"] = "regression"
    return out


def save_pretrained(
    model, params, folder, *, label_names: list[str] | None = None, tokenizer=None
) -> Path:
    """Writes `config.json` + `model.safetensors` that transformers loads with identical
    outputs, and the tokenizer's files when `tokenizer` (a tokenizer, or the folder/hub id
    to load it from) is given, so `transformers.pipeline(model=folder)` works as is.
    LoRA/DoRA/IA3 weights are merged first; adapters have no transformers equivalent."""
    from safetensors.numpy import save_file

    if isinstance(model.peft, AdapterConfig):
        raise ValueError(
            "adapter models cannot be exported to transformers (no adapter layers "
            "there); save the run's Orbax checkpoint instead"
        )
    if isinstance(model.peft, LoraConfig):
        params = merge_lora(params, model.peft)
    if isinstance(model.peft, IA3Config):
        params = merge_ia3(params, model.peft)
    num_labels = getattr(model, "num_labels", None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = flax_to_hf(jax.device_get(params))
    config = hf_config_dict(model.config, num_labels, label_names)
    tmp = folder / "model.safetensors.tmp"
    save_file(state, tmp, metadata={"format": "pt"})
    tmp.replace(folder / "model.safetensors")  # never leave a half-written checkpoint
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        if isinstance(tokenizer, str | os.PathLike):
            tokenizer = load_tokenizer(tokenizer)
        tokenizer.save_pretrained(str(folder))
    return folder


def tokenizer_hash(tokenizer) -> str:
    """sha256 of what decides a tokenizer's ids: a fast tokenizer's whole definition
    (vocabulary, normalizer, pre-tokenizer, special tokens; not its truncation or padding
    state), else its vocabulary. Part of a run's fingerprint of its base model."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = dict(json.loads(backend.to_str()), truncation=None, padding=None)
    else:
        vocab = getattr(tokenizer, "get_vocab", dict)()
        definition = dict(type=type(tokenizer).__name__, vocab=sorted(vocab.items()))
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def tokenizer_folder(path_or_id) -> Path:
    """The local folder whose tokenizer a checkpoint uses: its own, or for an adapter folder
    without tokenizer files, its base model's."""
    folder = resolve(path_or_id)
    has_own = any((folder / name).is_file() for name in TOKENIZER_FILES)
    if hf_peft.is_adapter_dir(folder) and not has_own:
        base = json.loads((folder / hf_peft.CONFIG_FILE).read_text()).get("base_model_name_or_path")
        if base:
            return tokenizer_folder(base)
    return folder


def load_tokenizer(path_or_id):
    """The checkpoint's fast tokenizer (transformers.AutoTokenizer); for an adapter folder
    without tokenizer files, its base model's."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_folder(path_or_id)), use_fast=True)


def load_encoder(path_or_id):
    """What runs encode data with: `load_tokenizer`'s tokenizer, read back from a cache
    without importing transformers after its first load (bertjax/hub/encoder.py)."""
    return encoder.load_encoder(tokenizer_folder(path_or_id), load_tokenizer)
