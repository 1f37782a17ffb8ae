"""Runs that used to end badly (issues #27, #28): accumulation longer than the run, a NaN
validation metric, a run that did not learn."""

import json
import logging
import math
import re
from pathlib import Path

import pytest

from bertjax import runs
from bertjax.train import loop as training
from bertjax.train.finish import did_not_learn
from bertjax.train.plan import check_accumulation
from tests.conftest import run_config


def _write_tsv(file: Path, rows: list[tuple[str, str]]) -> None:
    file.write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in rows))


def _sst2_rows(shared_data: Path, split: str, n: int) -> list[tuple[str, str]]:
    lines = (shared_data / "sst2" / f"{split}.tsv").read_text().splitlines()[1 : n + 1]
    return [tuple(line.rsplit("\t", 1)) for line in lines]


def test_accumulation_longer_than_the_run_is_refused(tmp_path, tiny_bert_vocab_dir, shared_data):
    """64 examples at batch 8 are 8 steps: optim.accumulate=16 would never update."""
    config = run_config(
        tmp_path / "run", tiny_bert_vocab_dir, shared_data / "sst2", **{"optim.accumulate": 16}
    )
    with pytest.raises(ValueError, match=r"optim.accumulate=16 is more than the run's 8 steps"):
        training.train(config)
    assert not (tmp_path / "run").exists()  # refused before the folder was started


def test_a_partial_last_accumulation_is_reported(caplog):
    """8 steps in accumulations of 3: the last 2 steps' gradients are never applied."""
    config = run_config(Path("unused"), Path("m"), Path("d"), **{"optim.accumulate": 3})
    with caplog.at_level(logging.WARNING, logger="bertjax"):
        check_accumulation(config, range(64))
    assert "the last 2 of 8 steps are a partial accumulation" in caplog.text
    caplog.clear()
    config.optim.accumulate = 4
    check_accumulation(config, range(64))
    assert caplog.text == ""


def test_a_nan_validation_metric_still_finishes(tmp_path, tiny_bert_vocab_dir, shared_data):
    """Regression on constant labels: Pearson's r is NaN at every evaluation. The first one
    is the best (the run finishes from it) instead of 'no checkpoints/best' on every re-run."""
    data = tmp_path / "constant"
    data.mkdir()
    for split, n in (("train", 64), ("dev", 48), ("test", 48)):
        rows = _sst2_rows(shared_data, split if split != "test" else "dev", n)
        _write_tsv(data / f"{split}.tsv", [(s, "1.0") for s, _ in rows])
    config = run_config(
        tmp_path / "run",
        tiny_bert_vocab_dir,
        data,
        **{"train.select_metric": "pearson", "train.epochs": 2, "peft.method": "head"},
    )
    summary = training.train(config)
    assert summary["best_step"] == 8  # the first evaluation: 64 / 8 steps
    assert math.isnan(summary["validation"]["pearson"])
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir()
    assert runs.finished_summary(runs.Run(config, tmp_path / "run")) is not None


def test_a_run_that_did_not_learn_says_so(tmp_path, tiny_bert_vocab_dir, shared_data, caplog):
    """A validation set of the training data's majority label only: the majority baseline
    scores accuracy 1.0 there, which no model beats by 0.02, so the run warns."""
    train_rows = _sst2_rows(shared_data, "train", 64)
    labels = [label for _, label in train_rows]
    majority = max(set(labels), key=labels.count)
    data = tmp_path / "majority"
    data.mkdir()
    _write_tsv(data / "train.tsv", train_rows)
    dev = [(s, majority) for s, _ in _sst2_rows(shared_data, "dev", 48)]
    _write_tsv(data / "dev.tsv", dev)
    config = run_config(tmp_path / "run", tiny_bert_vocab_dir, data, **{"data.splits.test": ""})
    with caplog.at_level(logging.WARNING, logger="bertjax"):
        summary = training.train(config)
    assert summary["majority_baseline"]["validation"]["accuracy"] == 1.0
    assert summary["warning"].startswith("the run did not learn: best validation accuracy")
    assert "majority-class baseline 1.0000" in summary["warning"]
    warned = [r for r in caplog.records if "did not learn" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert runs.finished_summary(runs.Run(config, tmp_path / "run"))["warning"] is not None


def test_did_not_learn_compares_with_the_baseline_by_the_margin():
    def summary(best, baseline):
        return dict(
            select_metric="accuracy",
            validation=dict(accuracy=best),
            majority_baseline=dict(validation=dict(accuracy=baseline)),
        )

    assert did_not_learn(summary(0.75, 0.70)) is None  # 0.05 over
    assert "best validation accuracy 0.7100" in did_not_learn(summary(0.71, 0.70))
    assert did_not_learn(summary(math.nan, 0.5)) is not None
    no_baseline = dict(select_metric="pearson", validation=dict(pearson=0.1))
    assert did_not_learn({**no_baseline, "majority_baseline": None}) is None


def test_resuming_on_changed_base_weights_is_refused(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    """A BitFit run interrupted at step 4, then the base checkpoint's frozen weights change:
    the same command refuses, naming both hashes, and base.json still names the weights the
    run started on. (Full fine-tuning resumes every weight from its checkpoint, and its hash
    covers no frozen weight.)"""
    import shutil

    import torch
    from transformers import BertModel

    from bertjax.train import stopping

    model = tmp_path / "model"
    shutil.copytree(tiny_bert_vocab_dir, model)
    overrides = {"data.splits.test": "", "peft.method": "bitfit"}
    config = run_config(tmp_path / "run", model, shared_data / "sst2", **overrides)
    monkeypatch.setenv(stopping.SELF_SIGNAL, "SIGINT@train:4")
    assert training.train(config)["interrupted_at"] == 4
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    started = (tmp_path / "run" / runs.BASE_FILE).read_text()
    old_hash = json.loads(started)["sha256"]

    changed = BertModel.from_pretrained(model)
    with torch.no_grad():
        changed.embeddings.word_embeddings.weight.add_(0.01)
    changed.save_pretrained(model)
    with pytest.raises(ValueError) as refused:
        training.train(config)
    message = str(refused.value)
    assert "\n" not in message and "differs from the one this run started on" in message
    new_hash, was = re.search(r"hash (\w{12}) != (\w{12})", message).groups()
    assert was == old_hash[:12] and new_hash != was
    assert (tmp_path / "run" / runs.BASE_FILE).read_text() == started
