"""The first run (issue #28): the bundled SST-2 sample, label names from the config to the
exported model, and progress lines for logs that are not a terminal."""

import json
import logging
from pathlib import Path

import pytest

import demo
from bertjax.hub import export
from bertjax.train import checks, progress
from bertjax.train import loop as training
from tests.conftest import run_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sst2_sample"


def test_the_sample_is_small_and_documented():
    sizes = {f.name: f.stat().st_size for f in SAMPLE.iterdir()}
    assert set(sizes) == {"train.tsv", "dev.tsv", "SOURCE.md"}
    assert sum(sizes.values()) <= 1_000_000
    rows = {
        split: (SAMPLE / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        for split in ("train", "dev")
    }
    assert rows["train"][0] == rows["dev"][0] == "sentence\tlabel"
    # 2,000 training sentences and GLUE's 872 dev sentences (428 negative, 444 positive)
    assert (len(rows["train"]) - 1, len(rows["dev"]) - 1) == (2000, 872)
    dev_labels = [line.rsplit("\t", 1)[1] for line in rows["dev"][1:]]
    assert (dev_labels.count("0"), dev_labels.count("1")) == (428, 444)
    assert "licen" in (SAMPLE / "SOURCE.md").read_text().lower()


def test_demo_config_is_valid_and_names_the_labels():
    config = demo.demo_config("some/model")
    checks.check_config(config)
    assert Path(config.data.path) == SAMPLE
    assert tuple(config.data.labels) == ("negative", "positive")


@pytest.fixture(scope="module")
def named_run(tmp_path_factory, tiny_bert_vocab_dir):
    """A tiny LoRA run on one labelled file (the sample's first 200 training sentences) whose
    integer labels are named by data.labels."""
    folder = tmp_path_factory.mktemp("named")
    file = folder / "reviews.tsv"
    file.write_text("\n".join((SAMPLE / "train.tsv").read_text().splitlines()[:201]) + "\n")
    config = run_config(
        folder / "run",
        tiny_bert_vocab_dir,
        file,
        **{"peft.method": "lora", "data.labels": ("negative,positive",)},
    )
    return folder / "run", training.train(config)


def test_one_labelled_file_trains_without_validation_or_test_files(named_run):
    _, summary = named_run
    # 200 rows: 20 carved out for validation (fraction 0.1), 64 of the other 180 trained on
    assert summary["train_examples"] == 64 and summary["test"] is None
    assert set(summary["validation"]) >= {"accuracy", "f1"}
    assert summary["majority_baseline"].keys() == {"validation"}


def test_label_names_reach_labels_json_and_the_exported_pipeline(named_run, tmp_path):
    named_run, _ = named_run
    assert json.loads((named_run / "labels.json").read_text()) == ["negative", "positive"]
    out = export.export(named_run, tmp_path / "exported")
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["id2label"] == {"0": "negative", "1": "positive"}
    assert hf_config["label2id"] == {"negative": 0, "positive": 1}

    from transformers import pipeline

    classify = pipeline("text-classification", model=str(out), top_k=None)
    for row in classify(["a fine film", "a dull one"]):
        assert sorted(d["label"] for d in row) == ["negative", "positive"]


def test_progress_lines_every_few_seconds_with_speed_and_eta(caplog):
    now = [0.0]
    meter = progress.Progress("validation @ 10", 40, every_s=5, enabled=True, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="bertjax")
    now[0] = 4.0
    assert meter.update(8, 1024) is None  # under 5 s since the start
    now[0] = 10.0
    # 20 of 40 steps in 10 s: 10 s to go; 2,560 examples in 10 s
    assert meter.update(20, 2560) == "validation @ 10: 20/40 steps, 256.0 examples/s, ETA 0:00:10"
    now[0] = 12.0
    assert meter.update(24, 3072) is None  # 2 s since the last line
    assert caplog.messages == ["validation @ 10: 20/40 steps, 256.0 examples/s, ETA 0:00:10"]
    assert (
        progress.progress_line("x", 1, 3601, 1, 1.0)
        == "x: 1/3601 steps, 1.0 examples/s, ETA 1:00:00"
    )
    # a resumed epoch: 100 of 300 steps were done by the session before, 50 more in 10 s
    resumed = progress.Progress(
        "e", 300, every_s=0, enabled=True, clock=lambda: now[0], initial=100
    )
    now[0] += 10.0
    assert resumed.update(150, 1600).endswith("160.0 examples/s, ETA 0:00:30")
    silent = progress.Progress("x", 2, every_s=0, enabled=False, clock=lambda: now[0])
    assert silent.update(1, 1) is None


def test_a_run_given_its_folder_is_named_after_it():
    """Issue #28: a run trained into --config.workdir=runs/reviews from configs/sst2.py was
    still called "sst2" in its summary and plot."""
    from bertjax.train.command import name_after_workdir
    from configs import sst2

    config = sst2.get_config()
    config.workdir = "runs/reviews"  # as the flags below set it
    name_after_workdir(config, ["--config=configs/sst2.py", "--config.workdir=runs/reviews"])
    assert config.name == "reviews"
    config = sst2.get_config()
    config.workdir = "runs/reviews"
    name_after_workdir(config, ["--config.workdir=runs/reviews", "--config.name=mine"])
    assert config.name == "sst2"  # --config.name named it: the file's (or the flag's) name
    config = sst2.get_config()
    name_after_workdir(config, ["--config=configs/sst2.py"])
    assert config.name == "sst2"  # no folder given: runs/sst2
