"""Training runs end to end on real data: run folder, metrics, resume, bad input."""

import json
import re
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
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    overrides = {"train.epochs": 2, "peft.method": "lora", "peft.lora.dropout": 0.1}
    whole = run_config(tmp_path / "whole", tiny_bert_vocab_dir, shared_data / "sst2", **overrides)
    training.train(whole)
    parts = run_config(tmp_path / "parts", tiny_bert_vocab_dir, shared_data / "sst2", **overrides)
    monkeypatch.setenv(training.SELF_SIGNAL, "SIGTERM@train:5")  # a real SIGTERM after step 5
    stopped = training.train(parts)
    assert stopped == dict(interrupted_at=5, signal="SIGTERM", exit_status=143)
    assert json.loads((tmp_path / "parts/checkpoints/last/meta.json").read_text())["step"] == 5
    monkeypatch.delenv(training.SELF_SIGNAL)
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


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    """Epoch 1 is clean (checkpoint at step 8); epoch 2's batches carry NaN weights."""
    from bertjax import batching

    clean = batching.train_batches

    def poisoned(*args, **kwargs):
        for batch in clean(*args, **kwargs):
            if args[4] == 1:  # the epoch argument
                batch = {**batch, "weights": np.full_like(batch["weights"], np.nan)}
            yield batch

    monkeypatch.setattr(batching, "train_batches", poisoned)
    config = run_config(
        tmp_path / "run", tiny_bert_vocab_dir, shared_data / "sst2", **{"train.epochs": 2}
    )
    result = training.train(config)
    assert result["diverged_at"] == 12
    assert re.search(r"loss is nan at step 12.*checkpoints/last", result["error"])
    saved, meta = checkpoint.restore(tmp_path / "run" / "checkpoints" / "last")
    assert meta["step"] == 8
    leaves = jax.tree_util.tree_leaves(saved["trainable"])
    assert all(np.isfinite(leaf).all() for leaf in leaves)


def test_num_labels_that_disagrees_with_the_data(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = run_config(
        tmp_path / "acl",
        tiny_bert_vocab_dir,
        shared_data / "acl_arc",
        **{"data.text_fields": ("text",), "num_labels": 3},
    )
    with pytest.raises(ValueError, match=r"config.num_labels=3 but the data's labels are"):
        training.train(config)


def test_sigint_saves_last_and_the_same_command_resumes(tmp_path, tiny_bert_vocab_dir):
    """A real SIGINT to train.py mid-epoch: checkpoints/last holds the step reached; the same
    command then finishes the run."""
    import signal
    import time

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = "".join(
        f"sentence number {i} {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(400)
    )
    (data_dir / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data_dir / "dev.tsv").write_text("sentence\tlabel\n" + "".join(rows.splitlines(True)[:40]))
    run = tmp_path / "run"
    command = [
        sys.executable,
        "train.py",
        "--config",
        "configs/tiny.py",
        f"--config.model={tiny_bert_vocab_dir}",
        f"--config.data.path={data_dir}",
        f"--config.workdir={run}",
        "--config.data.splits.test=",
        "--config.data.max_train_examples=400",
        "--config.train.batch_size=2",
        "--config.train.log_every=1",
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert "SIGINT at step" in stderr.decode()
    step = json.loads((run / "checkpoints/last/meta.json").read_text())["step"]
    assert 3 <= step < 200 and not (run / "summary.json").exists()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"resumed {run} from step {step}" in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["best_step"] == 200


def test_eval_cli_metrics_and_predict(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = run_config(
        tmp_path / "run",
        tiny_bert_vocab_dir,
        shared_data / "mrpc",
        **{"data.text_fields": ("sentence1", "sentence2"), "peft.method": "bitfit"},
    )
    summary = training.train(config)
    out = _cli("eval.py", "--ckpt", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    metrics.pop("loss")
    assert metrics == summary["validation"]
    assert out.stdout.splitlines()[0].split() == ["metric", "validation"]

    texts = tmp_path / "pairs.txt"
    texts.write_text("He ate.\tHe had eaten.\nA cat sat on the mat.\tStocks fell sharply.\n")
    out = _cli("eval.py", "--ckpt", str(tmp_path / "run"), "--predict", str(texts))
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "pairs.txt.predictions.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["sentence1", "sentence2", "label", "p_0", "p_1"]
    for line in lines[1:]:
        *_, label, p0, p1 = line.split("\t")
        assert abs(float(p0) + float(p1) - 1) < 1e-5
        assert label == ("0" if float(p0) > float(p1) else "1")
    bad = tmp_path / "single.txt"
    bad.write_text("only one text\n")
    with pytest.raises(ValueError, match=r"single.txt line 1: each line needs 2 tab-separated"):
        inference.predict_file(tmp_path / "run", bad, tmp_path / "out.tsv")
    assert not (tmp_path / "out.tsv").exists()
