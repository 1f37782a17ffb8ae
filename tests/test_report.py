"""report: runs grouped over seeds, mean ± std as numpy computes it, CSV and curve PNGs."""

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from bertjax import runs
from bertjax.studies import report
from bertjax.train import evaluate
from bertjax.train import loop as training
from tests.conftest import run_config

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_bert_vocab_dir, shared_data) -> Path:
    """sweep/head_s0, sweep/head_s1: two real 2-epoch runs that differ only in seed; and
    sweep/more/bitfit_s0: head_s0's files relabelled as BitFit with other numbers and a
    peak_memory_mb (a copy, to keep the test fast)."""
    folder = tmp_path_factory.mktemp("sweep")
    for seed in (0, 1):
        config = run_config(
            folder / f"head_s{seed}",
            tiny_bert_vocab_dir,
            shared_data / "sst2",
            **{
                "peft.method": "head",
                "train.seed": seed,
                "train.epochs": 2,
                "data.max_length": 8,  # one bucket: one compile per step function
                "data.max_train_examples": 16,
                "data.max_eval_examples": 16,
            },
        )
        training.train(config)
    fake = folder / "more" / "bitfit_s0"
    shutil.copytree(folder / "head_s0", fake)
    config = json.loads((fake / runs.CONFIG_FILE).read_text())
    config["peft"]["method"], config["name"] = "bitfit", "bitfit_s0"
    runs.write_json(fake / runs.CONFIG_FILE, config)
    summary = json.loads((fake / runs.SUMMARY_FILE).read_text())
    summary.update(method="bitfit", peak_memory_mb=123.4, trainable_params=706)
    summary["validation"]["accuracy"] = 0.8
    runs.write_json(fake / runs.SUMMARY_FILE, summary)
    return folder


def _summaries(sweep: Path, pattern: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(sweep.glob(f"{pattern}/summary.json"))]


def test_groups_and_mean_std(sweep, tmp_path):
    result = report.write_report([sweep], tmp_path)
    groups = result["groups"]
    assert [(g["dataset"], g["method"], g["n"], g["seeds"]) for g in groups] == [
        ("sst2", "head", 2, [0, 1]),
        ("sst2", "bitfit", 1, [0]),
    ]
    head = _summaries(sweep, "head_s*")
    for split in ("validation", "test"):
        values = np.array([s[split]["accuracy"] for s in head])
        mean, std, n = groups[0]["metrics"][split, "accuracy"]
        assert (mean, std, n) == (values.mean(), values.std(ddof=1), 2)
    text = result["markdown"]
    acc = np.array([s["validation"]["accuracy"] for s in head])
    assert f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    lines = {line.split("|")[2].strip(): line for line in rows}
    assert set(lines) == {"method", "head", "bitfit", "–"}  # "–": the majority-class row

    def cell(method, column):
        header = [c.strip() for c in lines["method"].split("|")]
        return lines[method].split("|")[header.index(column)].strip()

    peak = np.mean([s["peak_memory_mb"] for s in head])  # XLA's figure, from summary.json
    assert cell("head", "peak memory MB").startswith(f"{peak:.0f} ±")
    assert cell("bitfit", "peak memory MB") == "123"
    assert "| 0.800 |" in lines["bitfit"]  # one seed: the mean alone
    assert f"{head[0]['trainable_params']:,} (" in lines["head"]
    assert (tmp_path / "report.md").read_text() == text


def test_majority_baseline_by_hand():
    """Train's most frequent label (1) predicted for every example: accuracy is its share;
    macro-F1 averages F1 = 2p/(1+p) of that class (p its share) with 0 for the others."""
    train = np.array([0, 1, 1, 2, 1, 0])
    held = {"validation": np.array([1, 0, 2, 1]), "test": np.array([2, 2, 0, 1, 0])}
    base = evaluate.majority_baseline(train, held, num_labels=3)
    assert base["validation"]["accuracy"] == 0.5 and base["test"]["accuracy"] == 0.2
    assert base["validation"]["macro_f1"] == pytest.approx((2 * 0.5 / 1.5) / 3)
    assert base["test"]["macro_f1"] == pytest.approx((2 * 0.2 / 1.2) / 3)
    assert evaluate.majority_baseline(np.zeros(3), held, num_labels=1) is None  # regression


def test_majority_class_row_and_margin(sweep, tmp_path):
    """report's majority-class row shows summary.json's baseline, and each group's margin
    over it is mean − baseline, in standard deviations over seeds."""
    head = _summaries(sweep, "head_s*")
    every = [s["majority_baseline"]["test"]["accuracy"] for s in head]
    every += [s["majority_baseline"]["test"]["accuracy"] for s in _summaries(sweep, "more/*")]
    base = np.mean(every)  # each seed draws its own training subset
    assert 0 < base < 1
    text = report.write_report([sweep], tmp_path)["markdown"]
    row = next(line for line in text.splitlines() if line.startswith("| majority class |"))
    assert f"| {base:.3f} |" in row
    test = np.array([s["test"]["accuracy"] for s in head])
    margin = test.mean() - base
    line = next(line for line in text.splitlines() if line.startswith("| ") and "| head |" in line)
    assert line.rstrip(" |").endswith(f"{margin:+.3f} ({margin / test.std(ddof=1):.1f} σ)")


def test_csv_parses(sweep, tmp_path):
    report.write_report([sweep / "head_s0", sweep / "head_s1", sweep / "more"], tmp_path)
    with open(tmp_path / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["n"], r["seeds"]) for r in rows] == [
        ("head", "2", "0;1"),
        ("bitfit", "1", "0"),
    ]
    head = _summaries(sweep, "head_s*")
    mcc = np.array([s["validation"]["mcc"] for s in head])
    assert float(rows[0]["validation_mcc_mean"]) == pytest.approx(mcc.mean(), abs=1e-12)
    assert float(rows[0]["validation_mcc_std"]) == pytest.approx(mcc.std(ddof=1), abs=1e-12)
    assert rows[1]["validation_accuracy_std"] == ""  # one seed: no std
    assert float(rows[1]["peak_memory_mb_mean"]) == 123.4
    peak = np.mean([s["peak_memory_mb"] for s in head])
    assert float(rows[0]["peak_memory_mb_mean"]) == pytest.approx(peak)
    total = head[0]["total_params"]
    assert float(rows[0]["trainable_percent"]) == pytest.approx(100 * 66 / total)


def test_learning_curve_png(sweep, tmp_path):
    files = report.write_report([sweep], tmp_path)["files"]
    png = tmp_path / "curves_sst2.png"
    assert png in files and png.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0.01  # not blank
    # The plotted curve: per epoch the mean of the two seeds' validation accuracy.
    group = report.group_runs([report.load_run(sweep / f"head_s{s}") for s in (0, 1)])[0]
    epochs, mean, std = report.curve(group["runs"], "accuracy")
    per_seed = [
        [
            r["metrics"]["accuracy"]
            for r in runs.read_metrics(sweep / f"head_s{s}")
            if r["split"] == "validation"
        ]
        for s in (0, 1)
    ]
    np.testing.assert_array_equal(epochs, [1.0, 2.0])
    np.testing.assert_allclose(mean, np.mean(per_seed, axis=0))
    np.testing.assert_allclose(std, np.std(per_seed, axis=0, ddof=1))


def test_cli_writes_into_the_sweep_folder(sweep, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("report_script", REPO / "report.py")
    report_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report_script)
    out = sweep / "more"  # a folder of runs: the default output folder
    monkeypatch.setattr(sys, "argv", ["report.py", str(out)])
    report_script.main()
    printed = capsys.readouterr().out
    assert printed.startswith("# Results") and "| bitfit |" in printed
    assert {"report.md", "report.csv", "curves_sst2.png"} <= {p.name for p in out.iterdir()}
    monkeypatch.setattr(sys, "argv", ["report.py", str(sweep / "nothing_here")])
    with pytest.raises(SystemExit) as exit:
        report_script.main()
    assert exit.value.code == 1
    assert capsys.readouterr().err == f"error: {sweep / 'nothing_here'}: no such folder\n"


def test_default_output_folder_is_next_to_the_input(tmp_path):
    """One folder of runs: that folder. Run folders: the folder holding them, never the cwd."""
    for run in ("a/x", "a/y", "b/z"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "summary.json").write_text("{}")
    assert report.default_out([tmp_path / "a"]) == tmp_path / "a"
    assert report.default_out([tmp_path / "a/x"]) == tmp_path / "a"
    assert report.default_out([tmp_path / "a/x", tmp_path / "a/y"]) == tmp_path / "a"
    assert report.default_out([tmp_path / "a/x", tmp_path / "b/z"]) == tmp_path


def test_dataset_is_the_local_folder_when_data_path_is_set():
    config = {"data": {"name": "glue", "subset": "sst2", "path": "/data/my_sst2"}}
    assert report.dataset_name(config) == "my_sst2"
    assert report.dataset_name({"data": {"name": "glue", "subset": "sst2"}}) == "glue/sst2"


def test_settings_column_names_what_differs(sweep, tmp_path):
    """Same method, two learning rates: two rows, told apart by a settings column."""
    other = tmp_path / "runs" / "head_lr"
    shutil.copytree(sweep / "head_s0", other)
    config = json.loads((other / runs.CONFIG_FILE).read_text())
    config["optim"]["lr"] = 0.01
    runs.write_json(other / runs.CONFIG_FILE, config)
    groups = report.group_runs([report.load_run(p) for p in (sweep / "head_s0", other)])
    assert sorted(g["settings"] for g in groups) == ["optim.lr=0.001", "optim.lr=0.01"]
    assert "| settings |" in report.markdown(groups)


def test_results_page_has_each_study_its_time_published_number_and_curves(sweep, tmp_path):
    from bertjax.studies import results

    out, images = tmp_path / "results_root", tmp_path / "images"
    shutil.copytree(sweep, out / "sst2_rank")
    (out / "memory").mkdir()
    (out / "memory" / "minilm.md").write_text("| method | total |\n|---|---:|\n| lora | 12.5 |\n")
    findings = tmp_path / "findings.md"
    findings.write_text("Findings: only as far as the seeds go.\n")
    # head_s0 and head_s1 as the members of one vectorized group (one folder, one batch
    # size, the group's epoch times): its 100 s count once, bitfit_s0's 60 s beside it
    for run, seconds, epoch in (
        ("head_s0", 100, 50),
        ("head_s1", 100, 50),
        ("more/bitfit_s0", 60, 30),
    ):
        file = out / "sst2_rank" / run / runs.SUMMARY_FILE
        summary = json.loads(file.read_text())
        summary.update(wall_time_s=seconds, seconds_per_epoch=epoch)
        runs.write_json(file, summary)
    page = results.main(out, images, findings)
    assert page.index("Findings: only as far") < page.index("## SST-2")
    assert "3 runs, 3 min of training (wall time, a vectorized group counted once)" in page
    assert "0.90-0.92 dev accuracy" in page  # the published number beside ours
    assert "| majority class |" in page
    (out / "imdb" / "full" / "started_cell").mkdir(parents=True)  # a study still running
    page = results.main(out, images, findings)
    assert "No finished run yet: `make acl_arc`" in page
    assert "No finished run yet: `make imdb`" in page
    assert "| lora | 12.5 |" in page
    png = images / "sst2_rank_curves_sst2.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert f"]({images.name}/{png.name})" in page


def test_results_records_keep_a_study_once_its_run_folders_are_gone(sweep, tmp_path):
    """`--records`: the runs' small files are copied beside the page (no checkpoints) and the
    page reads them; a study with neither runs nor records keeps its previous section."""
    from bertjax.studies import results

    out, records = tmp_path / "runs_root", tmp_path / "records"
    shutil.copytree(sweep, out / "sst2_rank")
    results.archive(out, records)
    copied = sorted(p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file())
    assert copied == sorted(
        f"sst2_rank/{run}/{name}"
        for run in ("head_s0", "head_s1", "more/bitfit_s0")
        for name in results.RECORD_FILES
    )
    shutil.rmtree(out)  # the machine that ran them is gone
    previous = tmp_path / "RESULTS.md"
    previous.write_text(
        "# Results\n\n## IMDb: full fine-tuning vs BitFit, learning rate × batch size\n\n"
        "| full | 0.861 |\n\n## Training memory: the analytic estimate against XLA's "
        "compiled memory\n\n| lora | 12.5 |\n"
    )
    page = results.main(records, None, None, previous)
    assert "| majority class |" in page  # sst2_rank regenerated from its records
    imdb = page[page.index("## IMDb") : page.index("## Training memory")]
    assert imdb.count(results.KEPT_NOTE) == 1 and "| full | 0.861 |" in imdb
    assert "| lora | 12.5 |" in page
    assert "No finished run yet: `make acl_arc`" in page
    previous.write_text(page)
    assert results.main(records, None, None, previous).count(results.KEPT_NOTE) == 2  # once each


def test_results_commands_are_makefile_targets():
    """Each study's command on the page (`make NAME`) is a phony Makefile target that runs
    the study command, and the Makefile's study list is the catalog's, in its order."""
    from bertjax.studies import catalog, results

    lines = (Path(__file__).parent.parent / "Makefile").read_text().splitlines()
    phony = next(line for line in lines if line.startswith(".PHONY:")).split()
    studies = [
        name
        for line in lines
        if line.startswith(("STUDIES :=", "STUDIES +="))
        for name in line.split()[2:]
    ]
    assert studies == [study.name for study in catalog.STUDIES]
    assert "$(STUDIES)" in phony and "$(STUDIES):" in lines
    assert "\t$(PYTHON) -m bertjax.studies run $@ --out $(OUT) $(ARGS)" in lines
    for study in catalog.STUDIES:
        assert results.study_command(study) == f"make {study.name}"
    for target in ("results", "page", "memory", "demo", "test"):
        assert target in phony and any(line.startswith(f"{target}:") for line in lines)
