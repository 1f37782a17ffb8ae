"""Distillation runs through the training loop (issue #29): alpha = 1 is the plain run, a
resume reuses the cached teacher logits, the CLI trains and exports a compact student."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import runs
from bertjax.hub import export
from bertjax.runs import checkpoint
from bertjax.train import loop as training
from bertjax.train import stopping, teacher
from tests.conftest import TINY, run_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_bert_vocab_dir, shared_data) -> Path:
    """A finished tiny SST-2 run (full fine-tuning, 4 steps, trained in bfloat16): the teacher."""
    folder = tmp_path_factory.mktemp("teacher") / "run"
    overrides = {"train.max_steps": 4, "dtype": "bfloat16"}
    config = run_config(folder, tiny_bert_vocab_dir, shared_data / "sst2", **overrides)
    training.train(config)
    return folder


def test_a_teacher_trained_in_bfloat16_teaches_in_float32(teacher_run):
    loaded = teacher.load_teacher(teacher_run)
    assert json.loads((teacher_run / runs.CONFIG_FILE).read_text())["dtype"] == "bfloat16"
    assert loaded.model.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(loaded.params)} == {
        np.dtype(np.float32)
    }


def _trainable(run: Path, which: str):
    tree, _ = checkpoint.restore(run / "checkpoints" / which)
    return tree["trainable"] if which == "last" else tree


def _bitwise_equal(a, b) -> bool:
    same = jax.tree_util.tree_map(
        lambda x, y: np.asarray(x).tobytes() == np.asarray(y).tobytes(), a, b
    )
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        jax.tree_util.tree_leaves(same)
    )


def _train_losses(run: Path) -> list:
    return [(r["step"], r["loss"]) for r in runs.read_metrics(run) if r["split"] == "train"]


def test_alpha_one_is_the_plain_training_run_bitwise(
    tmp_path, tiny_bert_vocab_dir, shared_data, teacher_run
):
    common = (tiny_bert_vocab_dir, shared_data / "sst2")
    lora = {"train.max_steps": 6, "peft.method": "lora", "peft.lora.dropout": 0.1}
    plain = run_config(tmp_path / "plain", *common, **lora)
    training.train(plain)
    distilled = run_config(
        tmp_path / "alpha1",
        *common,
        **lora,
        **{"distill.teacher": str(teacher_run), "distill.alpha": 1.0},
    )
    training.train(distilled)
    assert list((tmp_path / "alpha1" / "teacher").glob("teacher_logits-*.npy"))  # it distilled
    assert _bitwise_equal(
        _trainable(tmp_path / "plain", "last"), _trainable(tmp_path / "alpha1", "last")
    )
    assert _bitwise_equal(
        _trainable(tmp_path / "plain", "best"), _trainable(tmp_path / "alpha1", "best")
    )
    assert _train_losses(tmp_path / "plain") == _train_losses(tmp_path / "alpha1")


def test_soft_targets_change_the_run(tmp_path, tiny_bert_vocab_dir, shared_data, teacher_run):
    """alpha = 0 trains on the teacher alone: other parameters than the label-trained run's
    (so the test above compares runs that could differ)."""
    common = (tiny_bert_vocab_dir, shared_data / "sst2")
    steps = {"train.max_steps": 2, "peft.method": "head"}
    training.train(run_config(tmp_path / "plain", *common, **steps))
    soft = {"distill.teacher": str(teacher_run), "distill.alpha": 0.0}
    training.train(run_config(tmp_path / "soft", *common, **steps, **soft))
    assert not _bitwise_equal(
        _trainable(tmp_path / "plain", "last"), _trainable(tmp_path / "soft", "last")
    )


def test_interrupted_distillation_resumes_bitwise_reusing_the_teacher_cache(
    tmp_path, tiny_bert_vocab_dir, shared_data, teacher_run, monkeypatch
):
    overrides = {
        "train.epochs": 2,
        "peft.method": "lora",
        "peft.lora.dropout": 0.1,
        "distill.teacher": str(teacher_run),
        "distill.alpha": 0.3,
    }
    common = (tiny_bert_vocab_dir, shared_data / "sst2")
    training.train(run_config(tmp_path / "whole", *common, **overrides))
    parts = run_config(tmp_path / "parts", *common, **overrides)
    monkeypatch.setenv(stopping.SELF_SIGNAL, "SIGTERM@train:5")
    stopped = training.train(parts)
    assert stopped == dict(interrupted_at=5, signal="SIGTERM", exit_status=143)
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    (cache,) = (tmp_path / "parts" / "teacher").glob("teacher_logits-*.npy")
    written = cache.stat().st_mtime_ns
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: pytest.fail("teacher recomputed"))
    training.train(parts)  # resumes at step 5, mid-epoch, with the cached logits
    assert cache.stat().st_mtime_ns == written
    assert _bitwise_equal(
        _trainable(tmp_path / "whole", "last"), _trainable(tmp_path / "parts", "last")
    )
    # the log window across the interruption (steps 5-8) holds 3 steps in the resumed session
    after = [r for r in _train_losses(tmp_path / "parts") if r[0] > 8]
    assert after and after == [r for r in _train_losses(tmp_path / "whole") if r[0] > 8]


def _config_file(folder: Path, model: Path, data_path: Path) -> Path:
    """A config file for train.py: tests.conftest.run_config's tiny run."""
    file = folder / "tiny.py"
    file.write_text(
        "from pathlib import Path\n"
        "from tests.conftest import run_config\n\n\n"
        "def get_config():\n"
        f"    return run_config(Path({str(folder / 'run')!r}), Path({str(model)!r}), "
        f"Path({str(data_path)!r}), **{{'train.max_steps': 2}})\n"
    )
    return file


def _train_cli(*args):
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_cli_distils_a_one_layer_student_that_exports_with_one_layer(
    tmp_path, tiny_bert_vocab_dir, shared_data, teacher_run
):
    config = _config_file(tmp_path, tiny_bert_vocab_dir, shared_data / "sst2")
    out = _train_cli(
        "--config",
        str(config),
        f"--config.distill.teacher={teacher_run}",
        "--config.model_layers=0",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / runs.SUMMARY_FILE).is_file()
    export.export(tmp_path / "run", tmp_path / "export")
    hf_config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert TINY["num_hidden_layers"] == 2 and hf_config["num_hidden_layers"] == 1


def test_cli_refuses_a_teacher_of_other_classes_in_one_line(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    names = {0: "bad", 1: "good", 2: "meh"}
    hf_config = BertConfig(**{**TINY, "vocab_size": 30522}, id2label=names)
    hf_config.label2id = {v: k for k, v in names.items()}
    folder = tmp_path / "teacher"
    BertForSequenceClassification(hf_config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_vocab_dir).save_pretrained(folder)
    config = _config_file(tmp_path, tiny_bert_vocab_dir, shared_data / "sst2")
    out = _train_cli("--config", str(config), f"--config.distill.teacher={folder}")
    assert out.returncode == 1
    error = out.stderr.strip().splitlines()[-1]
    assert "['bad', 'good', 'meh']" in error and "but the data has 2" in error
    assert not (tmp_path / "run").exists()  # nothing trained, no folder left


def test_vectorized_distillation_members_train_as_their_separate_runs(
    tmp_path, tiny_bert_vocab_dir, shared_data, teacher_run
):
    """Two seeds (two train splits, each with its teacher logits) and two runs sharing seed 0's
    split, trained as one program, against each trained alone (equal up to the rounding of
    batched matmuls)."""
    common = (tiny_bert_vocab_dir, shared_data / "sst2")
    overrides = {"train.max_steps": 4, "peft.method": "head", "distill.teacher": str(teacher_run)}
    overrides["dtype"] = "float32"  # vmapped (together) and plain (alone) steps round alike
    members = [(0, 1e-3), (0, 1e-2), (1, 1e-3)]

    def config(seed, lr, folder):
        name = f"{folder}/{seed}_{lr}"
        return run_config(
            tmp_path / name, *common, **overrides, **{"train.seed": seed, "optim.lr": lr}
        )

    training.train_runs([config(seed, lr, "together") for seed, lr in members])
    for seed, lr in members:
        training.train(config(seed, lr, "alone"))
        a = _trainable(tmp_path / f"together/{seed}_{lr}", "last")
        b = _trainable(tmp_path / f"alone/{seed}_{lr}", "last")
        jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, b)
    # members of one seed share a train split: its teacher logits are cached once
    assert list((tmp_path / "together/0_0.001/teacher").glob("*.npy"))
    assert list((tmp_path / "together/1_0.001/teacher").glob("*.npy"))


def test_a_lora_teacher_keeps_its_injection_and_computes_in_float32(tiny_bert_vocab_dir):
    """A PEFT run as the teacher (peft.Peft wraps the model; it has no dtype of its own): once
    a TypeError before any work."""
    import bertjax
    import peft

    lora = peft.LoraConfig(2, 4.0, 0.0, ("query",))
    model, _ = bertjax.from_pretrained(
        tiny_bert_vocab_dir, 2, peft=lora, dtype=jnp.bfloat16, announce_new=False
    )
    as_teacher = teacher.in_float32(model)
    assert isinstance(as_teacher, peft.Peft) and as_teacher.peft == lora
    assert model.wrapped.dtype == jnp.bfloat16 and as_teacher.wrapped.dtype == jnp.float32
