"""Hugging Face peft's adapter format (adapter_config.json + adapter_model.safetensors), both ways.

Names follow PeftModelForSequenceClassification's state dict: `base_model.model.<module>.`
`lora_A.weight` [r, in], `lora_B.weight` [out, r], `lora_magnitude_vector` [out] (DoRA),
`ia3_l` [out, 1] or [1, in] (feed-forward layers), and the head under its own names
(`modules_to_save`).
"""

import json
from pathlib import Path

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bertjax.hub.convert import flax_to_hf, hf_to_flax
from peft.ia3 import IA3Config
from peft.lora import LoraConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
HEAD = "classifier"
# adapter_config.json fields we cannot represent, with the value that we can.
UNSUPPORTED = {
    "use_rslora": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "layers_to_transform": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "lora_bias": False,
}


def is_adapter_dir(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def _layers(params, kind: str) -> list[tuple[str, ...]]:
    """Paths of the layers that hold a `kind` ("lora"/"ia3") subtree, in tree order."""
    paths = {p[: p.index(kind)] for p in flatten_dict(params) if kind in p}
    return sorted(paths)


def adapter_config(method: LoraConfig | IA3Config, params, base: str) -> dict:
    """adapter_config.json for `method`; target_modules lists the exact targeted modules."""
    kind = "lora" if isinstance(method, LoraConfig) else "ia3"
    modules = [".".join(p) for p in _layers(params, kind)]
    common = dict(
        base_model_name_or_path=base,
        task_type="SEQ_CLS",
        inference_mode=True,
        target_modules=modules,
        modules_to_save=[HEAD],
    )
    if kind == "ia3":
        feedforward = [
            m
            for m, p in zip(modules, _layers(params, kind), strict=True)
            if method.is_feedforward(p)
        ]
        return dict(common, peft_type="IA3", feedforward_modules=feedforward, fan_in_fan_out=False)
    return dict(
        common,
        peft_type="LORA",
        r=method.rank,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        use_dora=method.use_dora,
        **UNSUPPORTED,
    )


def to_hf_state(method: LoraConfig | IA3Config, params) -> dict[str, np.ndarray]:
    """The adapter's tensors under HF peft's names: factors of every targeted layer + head."""
    state = {}
    for path, value in flatten_dict(params).items():
        value = np.asarray(value, np.float32)
        if path[0] == HEAD:
            continue
        if "lora" in path:
            module, leaf = ".".join(path[:-2]), path[-1]
            name = {
                "a": "lora_A.weight",
                "b": "lora_B.weight",
                "magnitude": "lora_magnitude_vector",
            }
            tensor = value if leaf == "magnitude" else value.T
            state[f"{PREFIX}{module}.{name[leaf]}"] = tensor
        elif "ia3" in path:
            layer = path[:-2]
            shape = (1, -1) if method.is_feedforward(layer) else (-1, 1)
            state[f"{PREFIX}{'.'.join(layer)}.ia3_l"] = value.reshape(shape)
    head = flax_to_hf({HEAD: params[HEAD]})
    state.update({PREFIX + k: v for k, v in head.items()})
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def save_adapter(method, params, folder, base: str) -> Path:
    """Writes adapter_config.json + adapter_model.safetensors for `peft.PeftModel`."""
    from safetensors.numpy import save_file

    if not isinstance(method, LoraConfig | IA3Config):
        raise ValueError(
            f"{type(method).__name__}: Hugging Face peft has no equivalent of this method "
            "(bottleneck adapters), so it cannot be exported in its format"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state(method, params), folder / WEIGHTS_FILE, metadata={"format": "pt"})
    config = adapter_config(method, params, base)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_adapter(folder) -> tuple[dict, dict[str, np.ndarray]]:
    """(adapter_config.json as a dict, tensors by name) of an HF peft adapter folder."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / CONFIG_FILE}: not valid JSON ({err})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_FILE} beside {CONFIG_FILE}")
    from safetensors import SafetensorError

    try:
        return config, load_file(weights)
    except SafetensorError as err:  # a torn download or copy
        reason = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ValueError(
            f"{weights}: unreadable weights file, truncated or corrupt ({reason}); download "
            "or export the adapter again"
        ) from None


def method_of(config: dict, state: dict[str, np.ndarray], where) -> LoraConfig | IA3Config:
    """Our config for an adapter_config.json; targets are the modules that hold tensors."""
    kind = config.get("peft_type")
    if config.get("task_type") not in (None, "SEQ_CLS"):
        raise ValueError(
            f"{where}: task_type {config['task_type']!r} is not sequence classification (SEQ_CLS)"
        )
    if kind == "LORA":
        for key, ok in UNSUPPORTED.items():
            if config.get(key) not in (None, ok):
                raise ValueError(f"{where}: {key}={config[key]!r} is not supported (only {ok!r})")
        modules = _modules(state, (".lora_A.weight",))
        return LoraConfig(
            rank=int(config["r"]),
            alpha=float(config["lora_alpha"]),
            dropout=float(config.get("lora_dropout", 0.0)),
            targets=modules,
            use_dora=bool(config.get("use_dora", False)),
        )
    if kind == "IA3":
        if config.get("fan_in_fan_out"):
            raise ValueError(f"{where}: fan_in_fan_out=true is not supported")
        modules = _modules(state, (".ia3_l",))
        feedforward = [m for m in modules if state[f"{PREFIX}{m}.ia3_l"].shape[0] == 1]
        return IA3Config(targets=modules, feedforward=tuple(feedforward))
    raise ValueError(f"{where}: peft_type {kind!r} unsupported; bertjax reads LORA and IA3")


def _modules(state: dict, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    names = [k for k in state if k.endswith(suffixes)]
    found = tuple(
        sorted({k[len(PREFIX) :].rsplit(".", 2 if "lora_A" in k else 1)[0] for k in names})
    )
    if not found:
        raise ValueError(f"adapter weights hold no {' or '.join(suffixes)} tensor")
    return found


def from_hf_state(state: dict[str, np.ndarray], method, target: dict, where) -> dict:
    """Flax leaves (factors + head) of the HF peft tensors, checked against the tree `target`.

    Every tensor must be used and every factor of `target` present, else a ValueError.
    """
    flat_target = flatten_dict(target)
    renamed = {}
    for name, value in state.items():
        if not name.startswith(PREFIX):
            raise ValueError(f"{where}: tensor {name!r} lacks the {PREFIX!r} prefix")
        renamed[name[len(PREFIX) :]] = value
    factors, rest = {}, {}
    for name, value in renamed.items():
        module, _, leaf = name.rpartition(".")
        if name.endswith((".lora_A.weight", ".lora_B.weight")):
            module, leaf = name[: -len(".lora_A.weight")], name[-len("A.weight")]
            factors[(*module.split("."), "lora", leaf.lower())] = value.T
        elif leaf == "lora_magnitude_vector":
            factors[(*module.split("."), "lora", "magnitude")] = value
        elif leaf == "ia3_l":
            factors[(*module.split("."), "ia3", "scale")] = value.reshape(-1)
        else:
            rest[name] = value
    head_target = {HEAD: target[HEAD]} if HEAD in target else {}
    head, missing_head, unused = hf_to_flax(rest, head_target)
    if unused:
        raise ValueError(f"{where}: adapter tensors not used by the model: {', '.join(unused)}")
    if missing_head:
        raise ValueError(
            f"{where}: adapter lacks the head ({', '.join(map('/'.join, missing_head))})"
        )
    wanted = {p for p in flat_target if {"lora", "ia3"} & set(p)}
    extra, lacking = set(factors) - wanted, wanted - set(factors)
    if extra or lacking:
        names = sorted("/".join(p) for p in (extra or lacking))
        raise ValueError(
            f"{where}: adapter {'has tensors the model lacks' if extra else 'lacks'}: "
            + ", ".join(names[:5])
        )
    for path, value in factors.items():
        if value.shape != tuple(flat_target[path].shape):
            raise ValueError(
                f"{where}: {'/'.join(path)} has shape {value.shape}, the model expects "
                f"{tuple(flat_target[path].shape)}"
            )
    flat = {p: np.asarray(v, np.float32) for p, v in factors.items()}
    flat.update(flatten_dict(head))
    return unflatten_dict(flat)
