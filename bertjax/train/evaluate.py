"""Evaluation over a whole split: every example once, predictions back in dataset order."""

import dataclasses

import datasets
import jax
import numpy as np
from tqdm.auto import tqdm

from bertjax.data import batching
from bertjax.data.packing import enabled as packing_enabled
from bertjax.parallel import sharding
from bertjax.train.metrics import compute_metrics
from bertjax.train.progress import Progress

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "segment_ids",
    "position_ids",
    "cls_index",
    "labels",
    "weights",
)


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS}


def predict(
    eval_step,
    trainable,
    frozen,
    dataset: datasets.Dataset,
    batch_size: int,
    buckets: tuple[int, ...],
    pad_id: int,
    num_labels: int,
    *,
    mesh=None,
    desc: str | None = None,
    packing: bool = False,
) -> np.ndarray:
    """Logits [len(dataset), num_labels] in dataset order (batches split over `mesh`); a
    progress bar titled `desc` when given (on a terminal; elsewhere a log line every few
    seconds). `packing`: packed batches (bertjax/data/packing.py), whose examples' logits
    come flat [rows · E, …]."""
    logits = np.zeros((len(dataset), num_labels), np.float32)
    pending = []  # dispatch every batch before fetching any: no host sync per batch
    batches = batching.eval_batches(dataset, batch_size, buckets, pad_id=pad_id, packing=packing)
    for batch in batches:
        inputs = sharding.put_batch(model_inputs(batch), mesh)
        pending.append((batch["index"].reshape(-1), eval_step(trainable, frozen, inputs)))
    bar = tqdm(pending, desc=desc, unit="batch", disable=None if desc else True, leave=False)
    meter = Progress(desc or "", len(pending), enabled=None if desc else False)
    done_examples = 0
    for done, (index, out) in enumerate(bar, 1):
        real = index >= 0
        logits[index[real]] = np.asarray(jax.device_get(out))[real]
        done_examples += int(real.sum())
        meter.update(done, done_examples)
    return logits


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """What `predict` needs besides the parameters and the split, built once per run (or per
    group of runs) from its config and setup."""

    eval_step: object  # (trainable, frozen, batch) -> logits, from steps.make_*eval_step
    batch_size: int
    buckets: tuple[int, ...]
    pad_id: int
    mesh: object = None
    packing: bool = False

    def batches(self, dataset):
        """`predict`'s batches of dataset."""
        return batching.eval_batches(
            dataset, self.batch_size, self.buckets, pad_id=self.pad_id, packing=self.packing
        )

    def logits(self, trainable, frozen, dataset, num_outputs: int, desc=None) -> np.ndarray:
        """`predict`'s logits [len(dataset), num_outputs]."""
        return predict(
            self.eval_step,
            trainable,
            frozen,
            dataset,
            self.batch_size,
            self.buckets,
            self.pad_id,
            num_outputs,
            mesh=self.mesh,
            desc=desc,
            packing=self.packing,
        )


def evaluator_of(config, setup, eval_step, mesh=None) -> Evaluator:
    """The Evaluator of a run's config and setup (Setup: buckets, pad_id, model)."""
    return Evaluator(
        eval_step,
        config.train.eval_batch_size,
        setup.buckets,
        setup.pad_id,
        mesh,
        packing_enabled(config.data.get("packing", False), setup.model),
    )


def metrics_of(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """Task metrics plus the mean "loss" of the predictions against the labels."""
    metrics = compute_metrics(logits, labels, num_labels)
    metrics["loss"] = mean_loss(logits, labels)
    return metrics


def mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """The train step's loss (steps.loss_fn) of predictions on the host: mean cross-entropy
    (num_labels ≥ 2) or squared error (one output), in NumPy, so an evaluation compiles no
    programs beside its eval step."""
    logits = np.asarray(logits, np.float64)
    if not len(logits):
        return 0.0
    if logits.shape[-1] == 1:
        return float(np.mean((logits[:, 0] - labels) ** 2))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-np.mean(np.take_along_axis(log_probs, labels[:, None].astype(int), -1)))


def majority_baseline(train_labels, splits: dict, num_labels: int) -> dict | None:
    """{split: task metrics} of always predicting the most frequent training label, for each
    labelled split in `splits` (name -> labels); None for regression (num_labels 1)."""
    if num_labels < 2:
        return None
    majority = int(np.bincount(np.asarray(train_labels), minlength=num_labels).argmax())
    one_hot = np.eye(num_labels, dtype=np.float32)[majority]
    return {
        name: compute_metrics(np.tile(one_hot, (len(labels), 1)), labels, num_labels)
        for name, labels in splits.items()
    }


def evaluate(
    eval_step,
    trainable,
    frozen,
    dataset,
    batch_size,
    buckets,
    pad_id,
    num_labels,
    *,
    mesh=None,
    packing: bool = False,
) -> tuple[dict, np.ndarray]:
    """(metrics incl. "loss", logits) for a labelled split."""
    evaluator = Evaluator(eval_step, batch_size, buckets, pad_id, mesh, packing)
    logits = evaluator.logits(trainable, frozen, dataset, num_labels)
    return metrics_of(logits, np.asarray(dataset["label"]), num_labels), logits
