"""Exporting a trained run for PyTorch users: a merged transformers folder or an HF peft adapter."""

import json
from pathlib import Path

import jax

import peft
from bertjax import checkpoint, hf_peft, runs, training
from bertjax.pretrained import from_pretrained, load_tokenizer, save_pretrained

FORMATS = ("merged", "peft")


def load_trained(run) -> tuple:
    """(model, params, label names, config) of a run's best checkpoint, without its data.

    Refuses a base model whose weights differ from the ones the run was trained on.
    """
    run = Path(run)
    best = run / "checkpoints" / "best"
    if not checkpoint.exists(best):
        raise FileNotFoundError(f"{run}: no checkpoint at {best} (not a finished bertjax run?)")
    config = runs.load_config(run)
    names = json.loads((run / runs.LABELS_FILE).read_text())
    model, params = from_pretrained(
        config.model, config.num_labels or len(names), peft=training.peft_config(config)
    )
    mask = peft.trainable_mask(params, training.mask_method(config))
    trainable, frozen = peft.partition(params, mask)
    base = json.loads((run / runs.BASE_FILE).read_text())
    if base["sha256"] != checkpoint.tree_hash(frozen):
        raise ValueError(
            f"{run}: base model {config.model} differs from the one this run was trained on"
        )
    saved, _ = checkpoint.restore(best, dict(trainable=trainable))
    return model, peft.combine(frozen, jax.device_get(saved["trainable"])), names, config


def export(run, out, format: str = "merged") -> Path:
    """Writes the run's model to `out`: "merged" (config.json with id2label, weights with
    LoRA/DoRA/IA3 folded in, tokenizer: `transformers.pipeline(model=out)` works as is) or
    "peft" (adapter_config.json + adapter_model.safetensors + tokenizer, for
    `peft.AutoPeftModelForSequenceClassification`)."""
    if format not in FORMATS:
        raise ValueError(f"--format {format!r} unknown; use {' or '.join(FORMATS)}")
    model, params, names, config = load_trained(run)
    if isinstance(model.peft, peft.AdapterConfig):
        raise ValueError(
            f"{run}: bottleneck adapters ({model.peft.kind}) exist neither in transformers nor "
            "in Hugging Face peft, so they cannot be exported; evaluate with eval.py --ckpt"
        )
    if format == "merged":
        return save_pretrained(model, params, out, label_names=names, tokenizer=config.model)
    if not isinstance(model.peft, peft.LoraConfig | peft.IA3Config):
        raise ValueError(
            f"{run}: method {config.peft.method!r} has no adapter to export in the peft format "
            "(it changes the base weights); use --format merged"
        )
    hf_peft.save_adapter(model.peft, params, out, base=str(config.model))
    load_tokenizer(config.model).save_pretrained(str(out))
    return Path(out)
