"""Exporting a trained run for PyTorch users: a merged transformers folder or an HF peft adapter."""

from pathlib import Path

import jax

import peft
from bertjax.hub import hf_peft
from bertjax.hub.pretrained import load_tokenizer, save_pretrained
from bertjax.train import inference

FORMATS = ("merged", "peft")


def load_trained(run) -> tuple:
    """(model, params, label names, config) of a run's best checkpoint, without its data.

    Refuses a base model whose weights differ from the ones the run was trained on.
    """
    config, setup, trainable = inference.load_run(Path(run), with_data=False)
    params = peft.combine(setup.params, jax.device_get(trainable))
    return setup.model, params, setup.label_names, config


def export(run, out, format: str = "merged") -> Path:
    """Writes the run's model to `out` in `format` (see `write`)."""
    if format not in FORMATS:
        raise ValueError(f"--format {format!r} unknown; use {' or '.join(FORMATS)}")
    model, params, names, config = load_trained(run)
    extra = config.peft.get("modules_to_save")
    if format == "peft" and extra:
        raise ValueError(
            f"{run}: peft.modules_to_save={tuple(extra)} is not written in the peft format "
            "(only the head is); use --format merged"
        )
    return write(model, params, out, format, label_names=names, base=str(config.model))


def write(model, params, out, format: str, *, label_names, base: str) -> Path:
    """ "merged": config.json with id2label, weights with LoRA/DoRA/IA3 folded in, and the
    tokenizer of `base`, so `transformers.pipeline(model=out)` works as is. "peft":
    adapter_config.json + adapter_model.safetensors + the tokenizer, for
    `peft.AutoPeftModelForSequenceClassification.from_pretrained(out)`."""
    method = getattr(model, "peft", None)
    if isinstance(method, peft.AdapterConfig):
        raise ValueError(
            f"bottleneck adapters ({method.kind}) exist neither in transformers nor in "
            "Hugging Face peft, so they cannot be exported; evaluate with eval.py --ckpt"
        )
    if format == "merged":
        return save_pretrained(model, params, out, label_names=label_names, tokenizer=base)
    if not isinstance(method, peft.LoraConfig | peft.IA3Config):
        raise ValueError(
            "this run trained the base weights themselves (full, head or BitFit): there is "
            "no adapter to export in the peft format; use --format merged"
        )
    hf_peft.save_adapter(method, params, out, base=base)
    load_tokenizer(base).save_pretrained(str(out))
    return Path(out)
