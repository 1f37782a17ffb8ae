"""Exporting a trained run for PyTorch users: a merged transformers folder or an HF peft adapter."""

import os
import re
import shutil
import tempfile
from pathlib import Path

import jax

import peft
from bertjax import runs
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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents or path in folder.parents


def check_out(out, replace: bool, keep: tuple = ()) -> Path:
    """`out` as an absolute path, refused when it is a file, holds anything (unless
    `replace`), or contains / lies inside one of the folders in `keep` (the run, its base
    model): replacing those would destroy what the export reads."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; choose a folder")
    for folder in keep:
        if _inside(out.resolve(), Path(folder).resolve()):
            raise ValueError(
                f"--out {out} overlaps {folder}, which the export reads; choose another folder"
            )
    if out.is_dir() and any(out.iterdir()) and not replace:
        held = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise ValueError(
            f"--out {out} is not empty ({held}); choose an empty folder, or pass --replace "
            "to replace it"
        )
    return out


def export(run, out, format: str = "merged", replace: bool = False) -> Path:
    """Writes the run's model to `out` in `format` (see `write`): into a fresh folder beside
    `out`, swapped in only once complete, so `out` never mixes two exports nor holds a torn
    file. A non-empty `out` is refused unless `replace`."""
    if format not in FORMATS:
        raise ValueError(f"--format {format!r} unknown; use {' or '.join(FORMATS)}")
    base = Path(str(runs.load_config(run).model)).expanduser()
    out = check_out(out, replace, (Path(run), base) if base.is_dir() else (Path(run),))
    model, params, names, config = load_trained(run)
    extra = config.peft.get("modules_to_save")
    if format == "peft" and extra:
        raise ValueError(
            f"{run}: peft.modules_to_save={tuple(extra)} is not written in the peft format "
            "(only the head is); use --format merged"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(model, params, fresh, format, label_names=names, base=str(config.model))
        readable(fresh)
        swap_in(fresh, out)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors and tokenizers raise their own types
        raise OSError(
            f"cannot write the export to {out}: {_reason(err)}; free disk space (or fix the "
            f"folder's permissions) and export again; {out} is as it was"
        ) from None
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return out


def _reason(err: Exception) -> str:
    """The operating system's words ("File too large") when it gave them."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = (str(err).splitlines() or [type(err).__name__])[0]
    found = re.search(r"([A-Z][a-z][^():]*?) \(os error \d+\)", text)
    return found.group(1) if found else text


def readable(folder: Path) -> None:
    """Modes as the umask gives new files (0644, folders 0755): safetensors and mkdtemp
    create theirs 0600 / 0700, which other users then cannot load."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def swap_in(fresh: Path, out: Path) -> None:
    """Puts the complete folder `fresh` at `out` by renames (the old `out`, if any, is moved
    aside first and removed last)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        out.rename(old)
    fresh.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
