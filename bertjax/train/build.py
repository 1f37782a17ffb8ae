"""Config → objects: the peft config, the trainable mask, tokenized data and the model."""

import contextlib
import dataclasses
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import jax.numpy as jnp

import peft
from bertjax import data
from bertjax.data import batching
from bertjax.hub.pretrained import from_pretrained, load_encoder, tokenizer_hash
from bertjax.models import precision
from bertjax.models.families import head_modules, norm_modules
from bertjax.models.layers import REMAT_POLICIES
from bertjax.runs import checkpoint
from bertjax.train.checks import check_select_metric
from bertjax.train.distill import Distill

log = logging.getLogger("bertjax")

# Moved to bertjax/models/precision.py (runs/ compares resolved dtypes); kept here too.
DTYPES, BF16_CPU_FLAGS = precision.DTYPES, precision.BF16_CPU_FLAGS
native_bfloat16, compute_dtype = precision.native_bfloat16, precision.compute_dtype


def frozen_in_compute_dtype(params, mask, dtype):
    """params with the frozen (mask False) weight matrices cast to `dtype` once, as the train
    step keeps them (`precision.cast_kernels`); trainable leaves stay float32."""
    if jnp.dtype(dtype) == jnp.dtype(jnp.float32):
        return params
    trainable, frozen = peft.partition(params, mask)
    return peft.combine(precision.cast_kernels(frozen, dtype), trainable)


def peft_config(config):
    """The peft module config for config.peft.method (None for full/head/bitfit)."""
    method = config.peft.method
    if method in ("lora", "dora"):
        lora = config.peft.lora
        targets = lora.targets if isinstance(lora.targets, str) else tuple(lora.targets)
        return peft.LoraConfig(
            lora.rank, lora.alpha, lora.dropout, targets, use_dora=method == "dora"
        )
    if method == "ia3":
        ia3 = config.peft.ia3
        fields = (ia3.targets, ia3.feedforward)
        return peft.IA3Config(*(v if isinstance(v, str) else tuple(v) for v in fields))
    if method == "adapter":
        return peft.AdapterConfig(**config.peft.adapter.to_dict())
    if method not in ("full", "head", "bitfit"):
        raise ValueError(
            f"peft.method {method!r} unknown; use full, head, bitfit, lora, dora, ia3, adapter"
        )
    return None


def mask_method(config):
    """What `peft.trainable_mask` takes for this config: a peft config or the method name."""
    if config.peft.method == "bitfit":
        return peft.BitFitConfig(head=config.peft.bitfit.head)
    return peft_config(config) or config.peft.method


def head_of(config, model) -> tuple[str, ...]:
    """What trains whole beside a PEFT method: the family's head and peft.modules_to_save."""
    return head_modules(model) + tuple(config.peft.get("modules_to_save") or ())


def remat_of(config) -> bool | str:
    """config.train.remat checked: False, True or one of model.REMAT_POLICIES."""
    remat = config.train.get("remat", False)
    if isinstance(remat, bool) or remat in REMAT_POLICIES:
        return remat
    raise ValueError(
        f"train.remat={remat!r} unknown; use False, True or one of {', '.join(REMAT_POLICIES)}"
    )


@dataclasses.dataclass
class Setup:
    """Everything a run (or its evaluation) rebuilds from the config."""

    model: object
    params: dict
    mask: dict
    splits: dict
    label_names: list
    pad_id: int
    buckets: tuple
    base_hash: str  # the frozen weights and the tokenizer: what decides the outputs
    weights_hash: str = ""  # the frozen weights alone (runs written before issue #27)


def build_model(config, label_names: list, tokenizer, announce_new: bool = True) -> Setup:
    """The run's model, params and trainable mask from its config and class names, without
    data (`splits` empty). announce_new=False when trained weights will be restored over the
    freshly initialised head and PEFT weights, so they are not announced."""
    weights = load_weights(config, len(label_names), announce_new)
    return setup_of(config, label_names, tokenizer, *weights)


def load_weights(config, num_labels: int, announce_new: bool = True) -> tuple:
    """(model, params, trainable mask, sha256 of the frozen weights) of a config."""
    model, params = from_pretrained(
        config.model,
        num_labels,
        peft=peft_config(config),
        dtype=DTYPES[compute_dtype(config.dtype)],
        seed=config.train.seed,
        announce_new=announce_new,
        remat=remat_of(config),
        layers=config.get("model_layers"),  # a compact student: some of config.model's layers
    )
    mask = peft.trainable_mask(
        params, mask_method(config), head=head_of(config, model), norms=norm_modules(model)
    )
    _, frozen = peft.partition(params, mask)
    return model, params, mask, checkpoint.tree_hash(frozen)


def setup_of(config, label_names, tokenizer, model, params, mask, weights: str) -> Setup:
    return Setup(
        model,
        params,
        mask,
        {},
        list(label_names),
        tokenizer.pad_token_id,
        batching.bucket_lengths(config.data.max_length),
        hashlib.sha256(f"{weights} {tokenizer_hash(tokenizer)}".encode()).hexdigest(),
        weights,
    )


@contextlib.contextmanager
def held_logs():
    """Holds back the records other threads log to "bertjax" inside the block; yields the
    list they are kept in, to be handled after it."""
    caller, held = threading.get_ident(), []

    def hold(record: logging.LogRecord) -> bool:
        if record.thread == caller:
            return True
        held.append(record)
        return False

    log.addFilter(hold)
    try:
        yield held
    finally:
        log.removeFilter(hold)


def build(config, label_names=None) -> Setup:
    """Data splits, labels, tokenizer and the model with its trainable mask."""
    splits, names = data.labelled(config.data, config.train.seed, label_names, config.num_labels)
    num_labels = config.num_labels or len(names)
    if num_labels != len(names):
        raise ValueError(
            f"config.num_labels={num_labels} but the data's labels are {names[:10]} "
            f"({len(names)}); fix --config.num_labels or data.label_field"
        )
    check_select_metric(config, num_labels)
    # The weights load and the new head's init compiles (XLA, without the GIL) on a second
    # thread while the tokenizer loads (cold: transformers' import) and the splits tokenize;
    # its log records wait, so a config the tokenizer refuses fails with its error alone
    # (held_logs outermost: the pool's exit joins the thread before the hold is lifted).
    with held_logs() as held, ThreadPoolExecutor(1) as pool:
        weights = pool.submit(load_weights, config, len(names))
        tokenizer = load_encoder(config.model)
        splits = data.tokenize(splits, tokenizer, config.data)
        setup = setup_of(config, names, tokenizer, *weights.result())
    for record in held:
        log.handle(record)
    setup.splits = splits
    # Training only: exports and evaluation keep the float32 base (same logits either way).
    setup.params = frozen_in_compute_dtype(setup.params, setup.mask, setup.model.dtype)
    return setup


def distill_of(config) -> Distill | None:
    """The distillation loss settings of a config with distill.teacher; None without one."""
    settings = config.get("distill")
    if settings is None or settings.get("teacher") is None:
        return None
    return Distill(alpha=float(settings.alpha), temperature=float(settings.temperature))
