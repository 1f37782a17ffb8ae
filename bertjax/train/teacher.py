"""A distillation teacher: its logits on a list of texts, computed once and cached by key."""

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import datasets
import jax.numpy as jnp
import numpy as np

import peft
from bertjax import data, runs
from bertjax.data import files, packing
from bertjax.data.batching import SOFT_TARGETS, bucket_lengths
from bertjax.hub import encoder
from bertjax.hub.pretrained import from_pretrained, load_tokenizer, read_hf_config, resolve
from bertjax.parallel import distributed, sharding
from bertjax.runs import checkpoint
from bertjax.train.evaluate import predict
from bertjax.train.inference import load_run, read_texts
from bertjax.train.steps import make_eval_step

log = logging.getLogger("bertjax")

# Files that define a tokenizer (Hugging Face names), hashed into the cache key: the ones the
# tokenizer cache keys on (bertjax/hub/encoder.py; DeBERTa-v2/v3's spm.model included).
TOKENIZER_FILES = encoder.TOKENIZER_FILES
CACHE_PREFIX = "teacher_logits"
# A folder of teacher logits shared by runs (e.g. a study's students distilling on the same
# transfer texts); read before computing, written beside the run folder's own copy.
SHARED_CACHE = "BERTJAX_TEACHER_CACHE"


@dataclasses.dataclass
class Teacher:
    """A loaded teacher: model and float32 params, the folder of its tokenizer, the tokenizer
    and its class names (in id order)."""

    source: str
    model: object
    params: dict
    tokenizer_folder: Path
    tokenizer: object
    label_names: list[str]


def is_run(folder: Path) -> bool:
    """A bertjax run folder (labels.json beside config.json), not a Hugging Face folder."""
    return (folder / runs.LABELS_FILE).is_file() and (folder / runs.CONFIG_FILE).is_file()


def load_teacher(source) -> Teacher:
    """A finished run folder (its best checkpoint), a merged export or a Hugging Face
    classifier (folder or hub id); one-line errors for an unfinished run or a model
    without a classification head."""
    folder = resolve(source)
    if is_run(folder):
        return _run_teacher(folder, str(source))
    return _hf_teacher(folder, str(source))


def _run_teacher(run: Path, source: str) -> Teacher:
    if not (run / runs.SUMMARY_FILE).is_file():
        raise ValueError(
            f"distill.teacher={source}: the run did not finish (no {runs.SUMMARY_FILE}); "
            "finish it (train.py resumes it) or choose a finished run"
        )
    config, setup, trainable = load_run(run, with_data=False)
    _, frozen = peft.partition(setup.params, setup.mask)
    params = peft.combine(frozen, trainable)
    folder = resolve(config.model)
    # float32 whatever the teacher trained in: its targets should not carry bfloat16 rounding
    model = in_float32(setup.model)
    return Teacher(source, model, params, folder, load_tokenizer(folder), setup.label_names)


def in_float32(model):
    """The model computing in float32; a PEFT-injected one (peft.Peft: LoRA, DoRA, IA3) is
    its wrapped model so, with the injection kept."""
    if isinstance(model, peft.Peft):
        return model.clone(wrapped=in_float32(model.wrapped))
    return model.clone(dtype=jnp.float32)


def _hf_teacher(folder: Path, source: str) -> Teacher:
    hf_config = read_hf_config(folder)
    architectures = hf_config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"distill.teacher={source}: no classification head (architectures "
            f"{architectures}); give a fine-tuned classifier, a finished run or its export"
        )
    names = label_names_of(folder)
    model, params = from_pretrained(folder, len(names))
    return Teacher(source, model, params, folder, load_tokenizer(folder), names)


def label_names_of(source) -> list[str]:
    """A teacher's class names without loading it: a run's labels.json, else config.json's
    id2label (in id order)."""
    folder = resolve(source)
    if is_run(folder):
        return json.loads((folder / runs.LABELS_FILE).read_text())
    id2label = read_hf_config(folder).get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def check_teacher_labels(source, names: list[str], data_names: list[str]) -> None:
    """A one-line error unless the teacher `source` predicts the data's classes (`names`
    against `data_names`, in the same order). transformers' default names (LABEL_0,
    LABEL_1, …) say nothing: only their count must match."""
    names = list(names)
    generic = names == [f"LABEL_{i}" for i in range(len(names))]
    if names == list(data_names) or (generic and len(names) == len(data_names)):
        return
    raise ValueError(
        f"distill.teacher={source} predicts {len(names)} classes {names}, but the "
        f"data has {len(data_names)}: {list(data_names)}; distil from a teacher trained on "
        "the data's labels"
    )


def read_transfer(path, text_fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The texts a teacher labels for distill.transfer: a text file (one example per line,
    a tab between the texts of a pair), or a data folder's train split (its
    `text_fields` columns; labels unused). A one-line error when there are none."""
    path = Path(path)
    if path.is_dir():
        dataset = files.read_file(files.find_file(path, "train"))
        missing = [f for f in text_fields if f not in dataset.column_names]
        if missing:
            raise ValueError(
                f"distill.transfer={path}: the train split has no text field(s) {missing}; "
                f"columns: {dataset.column_names}"
            )
        texts = list(zip(*(dataset[f] for f in text_fields), strict=True))
    elif not path.is_file():
        raise FileNotFoundError(f"distill.transfer={path}: no such file or folder")
    else:
        try:
            texts = read_texts(path, tuple(text_fields))
        except ValueError as err:
            raise ValueError(f"distill.transfer={path}: {err}") from None
    if not texts:
        raise ValueError(f"distill.transfer={path}: no texts; give a file with one text a line")
    return texts


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def tokenizer_hash(folder: Path) -> str:
    """sha256 over the names and bytes of a folder's tokenizer files."""
    return _digest(*(p.name.encode() + p.read_bytes() for p in encoder.tokenizer_files(folder)))


def cache_key(teacher: Teacher, texts: list[tuple[str, ...]], max_length: int) -> dict:
    """What the teacher's logits depend on: its weights, its tokenizer, the texts and their
    truncation length (sha256 each) and `key`, one hash of them all."""
    parts = dict(
        weights=checkpoint.tree_hash(teacher.params),
        tokenizer=tokenizer_hash(teacher.tokenizer_folder),
        texts=_digest(json.dumps([list(t) for t in texts]).encode()),
        max_length=max_length,
    )
    parts["key"] = _digest(json.dumps(parts, sort_keys=True).encode())
    return parts


def forward(
    teacher: Teacher, texts: list[tuple[str, ...]], max_length: int, batch_size: int = 128
) -> np.ndarray:
    """The teacher's logits [len(texts), num_labels] (float32), texts tokenized by its own
    tokenizer, through the evaluation path: one eval step, packed rows where the family
    packs, batches split over every device."""
    fields = ("text", "text_pair")[: len(texts[0])]
    table = {f: [t[i] for t in texts] for i, f in enumerate(fields)}
    table["label"] = [data.NO_LABEL] * len(texts)
    data_cfg = SimpleNamespace(text_fields=fields, max_length=max_length)
    dataset = data.tokenize(
        {"teacher": datasets.Dataset.from_dict(table)}, teacher.tokenizer, data_cfg
    )["teacher"]
    mesh = sharding.data_mesh()
    sharding.check_batch_size(batch_size, mesh, "train.eval_batch_size")
    return predict(
        make_eval_step(teacher.model, mesh),
        teacher.params,
        {},
        dataset,
        batch_size,
        bucket_lengths(max_length),
        teacher.tokenizer.pad_token_id,
        teacher.model.num_labels,
        mesh=mesh,
        packing=packing.supported(teacher.model),
    )


def teacher_logits(
    teacher: Teacher,
    texts: list[tuple[str, ...]],
    cache_dir,
    max_length: int,
    batch_size: int = 128,
) -> np.ndarray:
    """The teacher's logits on `texts` [len(texts), num_labels]: read from `cache_dir` when
    a file of the same cache_key is there, else from the folder $BERTJAX_TEACHER_CACHE
    names (when set and it has one), else computed (`forward`); saved in `cache_dir` (and
    the shared folder) by process 0, atomically, so a killed run never leaves half a file."""
    key = cache_key(teacher, texts, max_length)
    name = f"{CACHE_PREFIX}-{key['key'][:16]}.npy"
    file = Path(cache_dir) / name
    if file.is_file():
        log.info("teacher logits from %s", file)
        return np.load(file)
    shared = Path(os.environ[SHARED_CACHE]) / name if os.environ.get(SHARED_CACHE) else None
    if shared is not None and shared.is_file():
        log.info("teacher logits from the shared cache %s", shared)
        logits = np.load(shared)
    else:
        logits = forward(teacher, texts, max_length, batch_size)
    if distributed.is_primary():
        for target in (file, shared):
            if target is not None and not target.is_file():
                _save_logits(target, logits, key, teacher.source)
    return logits


def _save_logits(file: Path, logits: np.ndarray, key: dict, source: str) -> None:
    """The .npy (renamed into place) and a .json naming what it was computed from."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, logits)
    file.with_suffix(".json").write_text(
        json.dumps(dict(key, teacher=source, shape=logits.shape), indent=1) + "\n"
    )
    os.replace(tmp, file)


def soft_train_set(config, train_set: datasets.Dataset, data_names, tokenizer, cache_dir):
    """The train split with the teacher's logits as column batching.SOFT_TARGETS, for a
    config with distill.teacher: the logits of the train split's own texts, or, with
    distill.transfer, the transfer texts in the train split's place (tokenized by the
    student's `tokenizer`, label 0: distill.alpha is 0 there). The cheap checks (transfer
    texts, the teacher's classes) come before the teacher loads."""
    distill, data_cfg = config.distill, config.data
    fields = tuple(data_cfg.text_fields)
    if distill.get("transfer"):
        texts = read_transfer(distill.transfer, fields)
        table = {f: [t[i] for t in texts] for i, f in enumerate(fields)}
        table["label"] = [0] * len(texts)
        splits = {"train": datasets.Dataset.from_dict(table)}
        train_set = data.tokenize(splits, tokenizer, data_cfg)["train"]
    else:
        raw = data.load_splits(data_cfg, config.train.seed)["train"]
        texts = list(zip(*(raw[f] for f in fields), strict=True))
    check_teacher_labels(distill.teacher, label_names_of(distill.teacher), data_names)
    teacher = load_teacher(distill.teacher)
    logits = teacher_logits(
        teacher, texts, cache_dir, data_cfg.max_length, config.train.eval_batch_size
    )
    return train_set.add_column(SOFT_TARGETS, logits.tolist())


def add_soft_targets(members: list, setups: list) -> None:
    """Distillation runs: each train split gains the teacher's logits (soft_train_set),
    cached in the run folder's teacher/ so a resume reads the same ones back. Members of one
    seed share a Setup and so one train split (cached in the first one's folder)."""
    done = set()
    for m, setup in zip(members, setups, strict=True):
        if not m.config.get("distill") or not m.config.distill.get("teacher"):
            continue
        if id(setup) not in done:
            done.add(id(setup))
            student_tokenizer = load_tokenizer(m.config.model)
            setup.splits["train"] = soft_train_set(
                m.config,
                setup.splits["train"],
                setup.label_names,
                student_tokenizer,
                m.folder / "teacher",
            )
