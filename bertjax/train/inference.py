"""Reloading a trained run: evaluate a split, or predict labels for new texts."""

import csv
import json
from pathlib import Path

import datasets
import jax
import numpy as np

import peft
from bertjax import data, runs
from bertjax.hub.pretrained import load_encoder
from bertjax.parallel import distributed, sharding
from bertjax.train.build import build_model
from bertjax.train.evaluate import evaluator_of, metrics_of
from bertjax.train.steps import make_eval_step


def load_run(run: Path, data_path: str | None = None, with_data: bool = True):
    """(config, setup, trainable) of a run folder, from its best checkpoint; setup.splits
    holds the tokenized data unless `with_data` is False.

    Refuses a base model whose weights differ from the ones the run was trained on.
    """
    run = Path(run)
    config = runs.load_config(run)
    best = run / "checkpoints" / "best"
    if not runs.checkpoint.candidates(best):  # best.new alone: a save being swapped in
        raise FileNotFoundError(f"{run}: no checkpoint at {best} (not a finished bertjax run?)")
    if data_path is not None:
        config.data.path, config.data.name = data_path, None
    names = json.loads((run / runs.LABELS_FILE).read_text())
    tokenizer = load_encoder(config.model)
    setup = build_model(config, names, tokenizer, announce_new=False)
    base = json.loads((run / runs.BASE_FILE).read_text())
    # a run from before issue #27 recorded the weights alone: its tokenizer goes unchecked
    if base["sha256"] not in (setup.base_hash, setup.weights_hash):
        raise ValueError(
            f"{run}: base model {config.model} differs from the one this run was trained on "
            f"(its weights or its tokenizer changed: {setup.base_hash[:12]} != "
            f"{base['sha256'][:12]}); restore that model folder, or train again"
        )
    if with_data:
        setup.splits, _ = data.prepare(config.data, tokenizer, config.train.seed, names)
    # read-only: train.py may be swapping best.new in right now (it holds the run's lock)
    like = peft.split(setup.params, setup.mask)
    trainable = runs.restore_best(runs.Run(config, run), like, repair=False)
    return config, setup, trainable


def _logits(config, setup, trainable, dataset, desc: str | None = None):
    """Logits of the run's model on an encoded split: one eval step, every example once, in
    packed rows when the run trained with them (data.packing; the same logits); progress
    titled `desc` (a bar on a terminal, else a log line every few seconds)."""
    _, frozen = peft.partition(setup.params, setup.mask)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.train.eval_batch_size, mesh, "train.eval_batch_size")
    evaluator = evaluator_of(config, setup, make_eval_step(setup.model, mesh), mesh)
    return evaluator.logits(trainable, frozen, dataset, setup.model.num_labels, desc)


def evaluate_run(run: Path, split: str = "validation", data_path: str | None = None) -> dict:
    """Metrics (incl. "loss") of the run's best checkpoint on `split` ("validation" or "test")."""
    config, setup, trainable = load_run(run, data_path)
    if split not in setup.splits:
        raise ValueError(f"{run}: no {split!r} split in the data (have {sorted(setup.splits)})")
    dataset = setup.splits[split]
    if not data.has_labels(dataset):
        raise ValueError(f"{run}: the {split!r} split has no labels to evaluate against")
    logits = _logits(config, setup, trainable, dataset, desc=split)
    return metrics_of(logits, np.asarray(dataset["label"]), setup.model.num_labels)


def read_texts(file: Path, fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """One example per non-empty line; a tab separates the two texts of a pair."""
    raw = Path(file).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{file} line {line}: not UTF-8; re-save the file as UTF-8") from None
    numbered = [(n, tuple(line.split("\t"))) for n, line in enumerate(text.splitlines(), 1)]
    numbered = [(n, e) for n, e in numbered if any(t.strip() for t in e)]
    if not numbered:
        raise ValueError(
            f"{file}: no texts to predict; write one per line"
            + (" (a tab between the two texts of a pair)" if len(fields) == 2 else "")
        )
    for number, example in numbered:
        if len(example) != len(fields):
            raise ValueError(
                f"{file} line {number}: each line needs {len(fields)} tab-separated text(s) "
                f"({', '.join(fields)}), got {len(example)}"
            )
    return [e for _, e in numbered]


def default_predictions_file(run: Path, texts_file: Path) -> Path:
    """Where `eval.py --predict` writes without --out: in the run folder, named after the
    texts file (never beside the input, which may be read-only or shared)."""
    return Path(run) / f"{Path(texts_file).name}.predictions.tsv"


def predict_file(run: Path, texts_file: Path, out_file: Path) -> tuple[Path, list[dict]]:
    """Writes a TSV (LF line ends): text(s), predicted label name and each label's
    probability; returns it with one {"text", "label", "probabilities": {name: p}} per example.
    Only the texts file is tokenized."""
    if Path(out_file).absolute().resolve() == Path(texts_file).absolute().resolve():
        raise ValueError(
            f"--out {out_file} is the --predict file itself; choose another file for the "
            "predictions"
        )
    fields = tuple(runs.load_config(run).data.text_fields)
    examples = read_texts(texts_file, fields)  # bad input fails before the model loads
    config, setup, trainable = load_run(run, with_data=False)
    table = {f: [e[i] for e in examples] for i, f in enumerate(fields)}
    table["label"] = [data.NO_LABEL] * len(examples)
    dataset = data.tokenize(
        {"predict": datasets.Dataset.from_dict(table)}, load_encoder(config.model), config.data
    )["predict"]
    logits = _logits(config, setup, trainable, dataset, desc="predict")
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    names = setup.label_names
    if distributed.is_primary():  # process 0 alone writes the file, whole or not at all
        tmp = Path(f"{out_file}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow([*fields, "label", *(f"p_{n}" for n in names)])
            for example, p in zip(examples, probs, strict=True):
                writer.writerow([*example, names[int(p.argmax())], *(f"{x:.6f}" for x in p)])
        tmp.replace(out_file)
    predictions = [
        dict(
            text=" | ".join(e),
            label=names[int(p.argmax())],
            probabilities=dict(zip(names, map(float, p), strict=True)),
        )
        for e, p in zip(examples, probs, strict=True)
    ]
    return Path(out_file), predictions
