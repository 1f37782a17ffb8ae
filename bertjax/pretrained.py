"""from_pretrained / from_config / save_pretrained: Hugging Face folders and hub ids."""

import dataclasses
import json
import logging
import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bertjax.config import ModelConfig, model_config_from_hf
from bertjax.convert import align_prefix, clean_state_dict, flax_to_hf, hf_to_flax
from bertjax.model import PeftConfig, build
from peft.adapter import AdapterConfig
from peft.lora import LoraConfig, check_targets, merge_lora

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
# Keys of pretraining checkpoints that a classifier never uses (MLM/NSP heads).
PRETRAINING_HEADS = ("cls.", "lm_head.")


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


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(file)


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
        reason = str(err).splitlines()[0]
        raise ValueError(
            f"{file}: refused to load, not a plain tensor checkpoint ({reason})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file}: refused to load, expected a dict of tensors")
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def _init_params(model, config: ModelConfig, seed: int, abstract: bool = False):
    tokens = jnp.zeros((1, 8), jnp.int32)
    init = jax.jit(model.init)
    if abstract:
        return jax.eval_shape(init, jax.random.key(seed), tokens)["params"]
    return init(jax.random.key(seed), tokens)["params"]


def _dense_paths(params: dict) -> list[tuple[str, ...]]:
    """Paths of the encoder's Dense layers (the LoRA candidates)."""
    paths = [p[:-1] for p in flatten_dict(params) if p[-1] == "kernel"]
    return [p for p in paths if "encoder" in p and "adapter" not in p and "lora" not in p]


def _check_peft(model, config: ModelConfig, peft: PeftConfig) -> None:
    if isinstance(peft, LoraConfig):
        plain = build(config, getattr(model, "num_labels", None))
        check_targets(peft, _dense_paths(_init_params(plain, config, 0, abstract=True)))
    elif isinstance(peft, AdapterConfig):
        peft.bottleneck(config.hidden_size)
    elif peft is not None:
        raise TypeError(f"peft must be a LoraConfig, an AdapterConfig or None, got {peft!r}")


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
    _check_peft(model, config, peft)
    return model, _init_params(model, config, seed)


def _is_new_ok(path: tuple[str, ...]) -> bool:
    """Parameters a base checkpoint may lack: the task head, BERT's pooler, PEFT weights."""
    return path[0] == "classifier" or "pooler" in path or "lora" in path or "adapter" in path


def _is_droppable(name: str, model) -> bool:
    """Checkpoint keys a model may leave unused, as transformers does (with a log line)."""
    bare = getattr(model, "num_labels", None) is None
    return (
        name.startswith(PRETRAINING_HEADS)
        or ".pooler." in f".{name}"
        or (bare and name.startswith("classifier."))
    )


def from_pretrained(
    path_or_id,
    num_labels: int | None = None,
    peft: PeftConfig = None,
    dtype=jnp.float32,
    seed: int = 0,
    remat: bool | str = False,
):
    """Loads a Hugging Face checkpoint (folder or hub id) into (model, params); remat: see
    bertjax.model.build.

    The checkpoint's classification head is loaded when it has one; otherwise the head is
    initialised from `seed` and logged. Every other key must be used and every encoder
    weight present, else a ValueError lists them.
    """
    folder = resolve(path_or_id)
    config = model_config_from_hf(read_hf_config(folder))
    model = build(config, num_labels, peft, dtype, remat)
    _check_peft(model, config, peft)
    state = clean_state_dict(read_state_dict(folder))
    state = align_prefix(state, None if num_labels is None else config.family)
    target = _init_params(model, config, seed, abstract=True)
    loaded, missing, unused = hf_to_flax(state, target)

    not_allowed = ["/".join(p) for p in missing if not _is_new_ok(p)]
    if not_allowed:
        raise ValueError(
            f"{folder}: checkpoint lacks {len(not_allowed)} weights: "
            + ", ".join(not_allowed[:10])
            + (" …" if len(not_allowed) > 10 else "")
        )
    bad_unused = [k for k in unused if not _is_droppable(k, model)]
    if bad_unused:
        raise ValueError(
            f"{folder}: checkpoint keys not used by the model: " + ", ".join(bad_unused)
        )
    if unused:
        log.info(
            "%s: unused checkpoint keys (pretraining heads/pooler): %s", folder, ", ".join(unused)
        )
    if missing:
        fresh = flatten_dict(_init_params(model, config, seed))
        flat = flatten_dict(loaded)
        flat.update({p: fresh[p] for p in missing})
        loaded = unflatten_dict(flat)
        log.warning("newly initialised (seed %d, not in %s): %s", seed, folder, _summarise(missing))
    return model, jax.tree_util.tree_map(jnp.asarray, loaded)


def _summarise(paths: list[tuple[str, ...]]) -> str:
    """Names plain paths; counts LoRA/adapter leaves instead of listing each layer's."""
    peft_paths = [p for p in paths if "lora" in p or "adapter" in p]
    plain = ["/".join(p) for p in paths if p not in peft_paths]
    if peft_paths:
        plain.append(f"{len(peft_paths)} PEFT weights")
    return ", ".join(plain)


def hf_config_dict(
    config: ModelConfig, num_labels: int | None, label_names: list[str] | None = None
) -> dict:
    """A `config.json` for transformers' BertModel/RobertaModel or …ForSequenceClassification."""
    arch = {
        "bert": "Bert",
        "roberta": "Roberta",
        "xlm-roberta": "XLMRoberta",
        "camembert": "Camembert",
    }[config.model_type]
    out = dataclasses.asdict(config)
    out["position_embedding_type"] = "absolute"
    if config.family == "roberta":
        out.update(bos_token_id=0, eos_token_id=2)
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


def save_pretrained(model, params, folder, *, label_names: list[str] | None = None) -> Path:
    """Writes `config.json` + `model.safetensors` that transformers loads with identical
    outputs. LoRA weights are merged first; adapters have no transformers equivalent."""
    from safetensors.numpy import save_file

    if isinstance(model.peft, AdapterConfig):
        raise ValueError(
            "adapter models cannot be exported to transformers (no adapter layers "
            "there); save the run's Orbax checkpoint instead"
        )
    if isinstance(model.peft, LoraConfig):
        params = merge_lora(params, model.peft)
    num_labels = getattr(model, "num_labels", None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = flax_to_hf(jax.device_get(params))
    config = hf_config_dict(model.config, num_labels, label_names)
    tmp = folder / "model.safetensors.tmp"
    save_file(state, tmp, metadata={"format": "pt"})
    tmp.replace(folder / "model.safetensors")  # never leave a half-written checkpoint
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_tokenizer(path_or_id):
    """The checkpoint's fast tokenizer (transformers.AutoTokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve(path_or_id)), use_fast=True)
