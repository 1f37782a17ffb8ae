"""Training runs end to end on real data: run folder, metrics, resume, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import peft
from bertjax import checkpoint, inference, runs, training
from tests.conftest import run_config

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {
    "config.json",
    "labels.json",
    "metrics.jsonl",
    "curves.png",
    "summary.json",
    "base.json",
    "checkpoints",
}


@pytest.mark.slow
def test_sst2_lora_minilm_end_to_end(tmp_path, minilm_path, shared_data):
    """Real checkpoint, real data: 2,000 SST-2 sentences, 1 epoch of LoRA."""
    config = run_config(
        tmp_path / "sst2_lora",
        minilm_path,
        shared_data / "sst2",
        **{
            "peft.method": "lora",
            "data.max_train_examples": 2000,
            "data.max_eval_examples": None,
            "train.batch_size": 32,
            "optim.lr": 5e-3,
            "optim.warmup_ratio": 0.1,
            "train.log_every": 20,
        },
    )
    summary = training.train(config)
    run = Path(config.workdir)
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    # measured 0.799 (MiniLM's [CLS] was never trained for classification: lr 5e-3 needed)
    assert summary["validation"]["accuracy"] > 0.75, summary  # chance is ~0.51
    assert summary["trainable_params"] == 6 * 2 * (384 * 8 * 2) + 384 * 2 + 2
    records = runs.read_metrics(run)
    assert {"train", "validation"} <= {r["split"] for r in records}
    # eval.py's path: rebuild everything from the run folder, same numbers exactly.
    again = inference.evaluate_run(run, "validation")
    again.pop("loss")
    assert again == summary["validation"]


@pytest.mark.parametrize("method", ["bitfit", "adapter"])
def test_pair_task_mrpc(tmp_path, tiny_bert_vocab_dir, shared_data, method):
    config = run_config(
        tmp_path / "mrpc",
        tiny_bert_vocab_dir,
        shared_data / "mrpc",
        **{
            "data.text_fields": ("sentence1", "sentence2"),
            "train.select_metric": "f1",
            "peft.method": method,
            "peft.adapter.reduction_factor": 4,
        },
    )
    summary = training.train(config)
    assert set(summary["validation"]) >= {"accuracy", "f1", "macro_f1", "mcc"}
    assert summary["test"] is not None and 0 <= summary["test"]["f1"] <= 1
    mask = peft.trainable_mask(*_params_and_method(config))
    assert summary["trainable_params"] == peft.count(_params_and_method(config)[0], mask)


def _params_and_method(config):
    setup = training.build(config)
    return setup.params, training.mask_method(config)


def test_string_labels_acl_arc(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = run_config(
        tmp_path / "acl",
        tiny_bert_vocab_dir,
        shared_data / "acl_arc",
        **{"data.text_fields": ("text",), "train.select_metric": "macro_f1", "peft.method": "head"},
    )
    training.train(config)
    names = json.loads((tmp_path / "acl" / "labels.json").read_text())
    assert names == sorted(names) and len(names) == 6 and "Background" in names


def test_resume_after_interrupt_gives_identical_parameters(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    overrides = {"train.epochs": 2, "peft.method": "lora", "peft.lora.dropout": 0.1}
    whole = run_config(tmp_path / "whole", tiny_bert_vocab_dir, shared_data / "sst2", **overrides)
    training.train(whole)
    parts = run_config(tmp_path / "parts", tiny_bert_vocab_dir, shared_data / "sst2", **overrides)
    assert training.train(parts, interrupt_at=5) == {"interrupted_at": 5}
    assert json.loads((tmp_path / "parts/checkpoints/last/meta.json").read_text())["step"] == 5
    training.train(parts)  # resumes at step 5, mid-epoch
    a = _last_trainable(tmp_path / "whole")
    b = _last_trainable(tmp_path / "parts")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, a, b))
    steps = [r["step"] for r in runs.read_metrics(tmp_path / "parts") if r["split"] == "train"]
    assert steps == sorted(set(steps))  # the redone part is not logged twice


def _last_trainable(run):
    tree, _ = checkpoint.restore(Path(run) / "checkpoints" / "last")
    return tree["trainable"]


# ---- bad input: one-line errors, run folder untouched ----


def _cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_unknown_config_key_is_rejected():
    out = _cli("train.py", "--config", "configs/sst2_lora.py", "--config.optim.learning_rate=1")
    assert out.returncode != 0 and "learning_rate" in out.stderr


def test_missing_data_file(tmp_path, tiny_bert_vocab_dir):
    config = run_config(tmp_path / "run", tiny_bert_vocab_dir, tmp_path / "nodata")
    with pytest.raises(FileNotFoundError, match="nodata"):
        training.train(config)


def test_label_field_absent_names_columns(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = run_config(
        tmp_path / "run",
        tiny_bert_vocab_dir,
        shared_data / "sst2",
        **{"data.label_field": "sentiment"},
    )
    with pytest.raises(ValueError, match="sentiment.*sentence"):
        training.train(config)


def test_workdir_with_a_different_config_is_refused(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = run_config(
        tmp_path / "run",
        tiny_bert_vocab_dir,
        shared_data / "sst2",
        **{"train.max_steps": 2, "peft.method": "head"},
    )
    training.train(config)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    config.optim.lr = 5e-5
    with pytest.raises(ValueError, match="different config.*optim.lr"):
        training.train(config)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    training.train(config, overwrite=True)


def test_eval_of_a_folder_that_is_not_a_run(tmp_path):
    out = _cli("eval.py", "--ckpt", str(tmp_path))
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("error:")
    assert "not a run folder" in out.stderr
