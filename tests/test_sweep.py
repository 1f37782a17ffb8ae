"""Sweeps: grid parsing, report, resume, and vectorized runs equal to separate runs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bertjax import runs
from bertjax.data import batching
from bertjax.runs import checkpoint
from bertjax.studies import sweep, sweep_report
from bertjax.train import build, groups, stopping
from bertjax.train import loop as training
from tests.conftest import run_config

REPO = Path(__file__).resolve().parents[1]
# LoRA with dropout (its own and the encoder's 0.1), warmup then linear decay; max_length 16
# gives buckets (8, 16), so the two seeds' batches often differ in length at a step.
OVERRIDES = {
    "peft.method": "lora",
    "peft.lora.dropout": 0.1,
    "data.max_length": 16,
    "train.epochs": 2,
    "optim.warmup_ratio": 0.25,
}
GRID = {"optim.lr": (1e-2, 1e-3)}
SEEDS = (1, 2)
# Measured (CPU): vectorized vs separate final LoRA + head parameters (8,456 values, up to
# ~0.1) differ by at most 7.5e-8 absolute, 2.3e-5 relative where |x| > 1e-3 (float32 rounding
# of batched vs unbatched matmuls); validation and test metrics and best steps are identical.
RTOL, ATOL = 1e-5, 1e-6


def _config(root: Path, model: Path, data: Path, **overrides):
    config = run_config(root / "tiny", model, data, **{**OVERRIDES, **overrides})
    config.lock()
    return config


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, tiny_bert_vocab_dir, shared_data):
    """The same 2 lrs × 2 seeds swept twice: as separate runs and vectorized (K=4)."""
    root = tmp_path_factory.mktemp("sweeps")
    # float32: vectorized and separate runs are compared to float32 rounding (RTOL)
    config = _config(root, tiny_bert_vocab_dir, shared_data / "sst2", dtype="float32")
    separate = sweep.run_sweep(config, GRID, SEEDS, root / "separate")
    vector = sweep.run_sweep(config, GRID, SEEDS, root / "vectorized", vectorize=True)
    return config, root, separate, vector


def _cells(config, folder):
    return sweep.make_cells(config, GRID, SEEDS, folder)


def _last_trainable(run: Path):
    tree, meta = checkpoint.restore(run / "checkpoints" / "last")
    return tree["trainable"], meta["step"]


def test_vectorized_equals_separate_runs(sweeps):
    """Parameters, metrics and best step of each vectorized member equal its separate run's."""
    config, root, _, _ = sweeps
    pairs = zip(_cells(config, root / "vectorized"), _cells(config, root / "separate"), strict=True)
    for a, b in pairs:
        assert {"config.json", "labels.json", "base.json", "metrics.jsonl", "curves.png"} <= {
            p.name for p in a.run.iterdir()
        }
        (va, step_a), (vb, step_b) = _last_trainable(a.run), _last_trainable(b.run)
        assert step_a == step_b == 16
        for x, y in zip(jax.tree_util.tree_leaves(va), jax.tree_util.tree_leaves(vb), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)
        sa = json.loads((a.run / runs.SUMMARY_FILE).read_text())
        sb = json.loads((b.run / runs.SUMMARY_FILE).read_text())
        assert sa["best_step"] == sb["best_step"]
        assert sa["trainable_params"] == sb["trainable_params"]
        # The group's program holds 4 members' activations: more than one separate run.
        assert sa["peak_memory_mb"] > sb["peak_memory_mb"] > 0
        for split in ("validation", "test"):
            assert sa[split].keys() == sb[split].keys()
            for name in sa[split]:
                np.testing.assert_allclose(sa[split][name], sb[split][name], rtol=1e-6)
        loss = {
            r["step"]: r["loss"] for r in runs.read_metrics(b.run) if r["split"] == "validation"
        }
        for r in runs.read_metrics(a.run):
            if r["split"] == "validation":
                np.testing.assert_allclose(r["loss"], loss[r["step"]], rtol=RTOL)


def test_sweep_report_picks_the_best_mean(sweeps):
    config, root, separate, _ = sweeps
    folder = root / "separate"
    for name in (sweep_report.REPORT_FILE, sweep_report.CSV_FILE, sweep_report.HEATMAP_FILE):
        assert (folder / name).stat().st_size > 0
    scores = {}
    for cell in _cells(config, folder):
        summary = json.loads((cell.run / runs.SUMMARY_FILE).read_text())
        scores.setdefault(cell.point, []).append(summary["validation"]["accuracy"])
    means = {point: np.mean(values) for point, values in scores.items()}
    best = max(means, key=means.get)
    assert separate["winner"]["point"] == {"optim.lr": best[0]}
    np.testing.assert_allclose(separate["winner"]["validation"], means[best])
    report = (folder / sweep_report.REPORT_FILE).read_text()
    assert f"lr={sweep_report.format_value(best[0])}: validation accuracy" in report
    assert "test accuracy" in report and "trainable parameters" in report
    with open(folder / sweep_report.CSV_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [r["cell"] for r in rows] == [
        "lr=0.01,seed=1",
        "lr=0.01,seed=2",
        "lr=1e-3,seed=1",
        "lr=1e-3,seed=2",
    ]
    assert {r["status"] for r in rows} == {"done"}


@pytest.mark.parametrize("kind", ["separate", "vectorized"])
def test_resume_skips_finished_cells(sweeps, kind):
    config, root, _, _ = sweeps
    cells = _cells(config, root / kind)
    summaries = [c.run / runs.SUMMARY_FILE for c in cells]
    before = [s.stat().st_mtime_ns for s in summaries]
    old = json.loads(summaries[1].read_text())
    summaries[1].unlink()  # as if the run had stopped after its last checkpoint
    sweep.run_sweep(config, GRID, SEEDS, root / kind, vectorize=kind == "vectorized")
    after = [s.stat().st_mtime_ns for s in summaries]
    assert [after[i] == before[i] for i in range(4)] == [True, False, True, True]
    new = json.loads(summaries[1].read_text())
    assert new["validation"] == old["validation"] and new["best_step"] == old["best_step"]
    steps = [r["step"] for r in runs.read_metrics(cells[1].run) if r["split"] == "train"]
    assert steps == sorted(set(steps))


@pytest.mark.slow  # ~90 s more on 2 busy cores: the group is built and traced twice
def test_vectorized_group_resumes_mid_run(sweeps, tmp_path, monkeypatch):
    """Interrupted by a SIGINT after step 5 (mid-epoch), then resumed by the sweep: the same
    parameters as the uninterrupted vectorized sweep, bit for bit."""
    config, root, _, _ = sweeps
    members = [c.config for c in _cells(config, tmp_path)]
    monkeypatch.setenv(stopping.SELF_SIGNAL, "SIGINT@train:5")
    stopped = dict(interrupted_at=5, signal="SIGINT", exit_status=130)
    assert training.train_runs(members) == [stopped] * 4
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    sweep.run_sweep(config, GRID, SEEDS, tmp_path, vectorize=True)
    for a, b in zip(_cells(config, tmp_path), _cells(config, root / "vectorized"), strict=True):
        (va, _), (vb, _) = _last_trainable(a.run), _last_trainable(b.run)
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, va, vb))
        steps = [r["step"] for r in runs.read_metrics(a.run) if r["split"] == "train"]
        assert steps == sorted(set(steps))


# ---- no training ----


def test_parse_grid_types_and_errors(tmp_path):
    config = _config(tmp_path, tmp_path, tmp_path)
    grid = sweep.parse_grid(
        config,
        [
            "optim.lr=3e-4,1e-4",
            "train.batch_size=8,16",
            "peft.method=bitfit,lora",
            "train.max_steps=5",
        ],
    )
    assert grid == {
        "optim.lr": (3e-4, 1e-4),
        "train.batch_size": (8, 16),
        "peft.method": ("bitfit", "lora"),
        "train.max_steps": (5,),
    }
    assert isinstance(grid["train.batch_size"][0], int)
    bad = {
        "optim.learning_rate=1e-4": "'optim.learning_rate' is not a config field",
        "optim=1": "'optim' is not a config field",
        "train.batch_size=8,x": "train.batch_size: 'x' is not a valid int",
        "train.batch_size=2.5": "train.batch_size: '2.5'",
        "data.text_fields=a": "data.text_fields: a tuple field cannot be swept",
        "optim.lr": "expected key=value1,value2",
    }
    for spec, message in bad.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            sweep.parse_grid(config, [spec])
    cells = sweep.make_cells(config, grid, (1, 2), tmp_path)
    assert cells[0].name == "lr=3e-4,batch_size=8,method=bitfit,max_steps=5,seed=1"
    assert cells[0].config.optim.lr == 3e-4 and cells[0].config.train.seed == 1
    assert cells[0].config.workdir == str(tmp_path / cells[0].name)


def test_plan_calls_splits_pads_and_drops():
    """Members sharing a batch length, ≤ cap per call, padded to a power of two by repeating
    a member whose result goes to index k (dropped)."""
    calls = groups.plan_calls([np.array([0, 1, 4, 5, 6]), np.array([2, 3])], k=7, cap=4)
    assert [(t.tolist(), p.tolist()) for t, p in calls] == [
        ([0, 1, 4, 0], [0, 1, 4, 7]),
        ([5, 6], [5, 6]),
        ([2, 3], [2, 3]),
    ]


def test_vectorize_refuses_full_fine_tuning(tmp_path):
    config = _config(tmp_path, tmp_path, tmp_path, **{"peft.method": "full"})
    with pytest.raises(ValueError, match="full fine-tuning"):
        sweep.run_sweep(config, GRID, SEEDS, tmp_path / "sweep", vectorize=True)
    assert not (tmp_path / "sweep").exists()


def test_report_of_a_lr_by_batch_size_grid_with_seeds(tmp_path):
    """The heatmap, mean ± std and winner of a 2 × 2 grid × 2 seeds, from written summaries."""
    config = _config(tmp_path, tmp_path, tmp_path)
    grid = {"optim.lr": (3e-4, 1e-4), "train.batch_size": (8, 16)}
    cells = sweep.make_cells(config, grid, (1, 2), tmp_path)
    scores = iter([0.70, 0.72, 0.80, 0.90, 0.60, 0.62, 0.81, 0.83])
    for cell in cells:
        cell.run.mkdir()
        runs.write_json(cell.run / runs.CONFIG_FILE, runs.config_dict(cell.config))
        value = next(scores)
        summary = dict(
            validation={"accuracy": value},
            test={"accuracy": value - 0.1},
            best_step=3,
            trainable_params=10,
            total_params=100,
        )
        if cell.name != "lr=1e-4,batch_size=16,seed=2":
            runs.write_json(cell.run / runs.SUMMARY_FILE, summary)
    result = sweep_report.write_sweep_report(tmp_path, config, grid, (1, 2), cells)
    assert result["winner"]["point"] == {"optim.lr": 3e-4, "train.batch_size": 16}
    np.testing.assert_allclose(result["winner"]["validation"], 0.85)
    np.testing.assert_allclose(result["winner"]["validation_std"], np.std([0.8, 0.9], ddof=1))
    np.testing.assert_allclose(result["winner"]["test"], 0.75)
    report = (tmp_path / sweep_report.REPORT_FILE).read_text()
    assert "| 3e-4 | 16 | **0.8500 ± 0.0707** | 2/2 |" in report
    assert "| 1e-4 | 16 | 0.8100 | 1/2 (not finished) |" in report
    assert "lr=3e-4, batch_size=16: validation accuracy 0.8500 ± 0.0707; test accuracy" in report
    assert (tmp_path / sweep_report.HEATMAP_FILE).stat().st_size > 0
    assert not sweep.finished(cells[-1]) and sweep.finished(cells[0])


def test_cli_bad_grid_key_names_it():
    out = subprocess.run(
        [
            sys.executable,
            "sweep.py",
            "--config",
            "configs/tiny.py",
            "--grid",
            "optim.learning_rate=1e-4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --grid key 'optim.learning_rate' is not a config field"
    )


def test_vectorized_seeds_whose_packed_rows_hold_different_numbers_of_examples(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    """Two seeds' subsets pack into rows of one shape (5 × 24) but 3 vs 2 examples per row:
    their batches take separate calls (once failed stacking the labels) and each member ends
    as its separate run."""
    overrides = {"data.max_train_examples": 96, "data.max_length": 24, "train.epochs": 1}
    config = _config(tmp_path, tiny_bert_vocab_dir, shared_data / "sst2", **overrides)

    def member(seed: int, folder: str):
        member = config.copy_and_resolve_references()
        member.update_from_flattened_dict(
            {"train.seed": seed, "optim.lr": 1e-2, "workdir": str(tmp_path / folder / str(seed))}
        )
        return member

    layouts = set()
    for seed in SEEDS:
        setup = build.build(member(seed, "probe"))
        longest = batching.longest_batch(setup.splits["train"], 8, setup.buckets, 2, packing=True)
        layouts.add((longest["input_ids"].shape, longest["labels"].shape))
    assert layouts == {((5, 24), (5, 3)), ((5, 24), (5, 2))}  # the case under test
    together = [member(seed, "together") for seed in SEEDS]
    alone = [member(seed, "alone") for seed in SEEDS]
    vectorized = training.train_runs(together)
    separate = [training.train(member) for member in alone]
    for v, s in zip(vectorized, separate, strict=True):
        assert v["validation"] == s["validation"] and v["best_step"] == s["best_step"]
