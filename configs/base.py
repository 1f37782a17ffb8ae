"""Defaults for every run; task configs import get_config() and override fields.

Not a task by itself: it trains nothing useful until `model` and `data.*` are set.
"""

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "base"  # run name; the default workdir is runs/<name>
    config.model = "bert-base-uncased"  # local folder or hub id
    config.num_labels = placeholder(int)  # None: from the data's labels
    config.workdir = placeholder(str)  # None: runs/<name>
    config.dtype = "float32"  # computation dtype: float32 | bfloat16 (params stay float32)

    config.data = data = ml_collections.ConfigDict()
    data.name = placeholder(str)  # hub dataset, e.g. "glue" (with subset "sst2"), "imdb"
    data.subset = placeholder(str)
    data.path = placeholder(str)  # or a local folder with {train,dev,test}.{tsv,csv,jsonl,…}
    data.text_fields = ("sentence",)
    data.label_field = "label"
    data.splits = ml_collections.ConfigDict(
        dict(train="train", validation="validation", test="test")
    )
    data.validation_fraction = placeholder(float)  # carve validation from train (IMDb)
    data.max_length = 128
    data.max_train_examples = placeholder(int)
    data.max_eval_examples = placeholder(int)

    config.peft = p = ml_collections.ConfigDict()
    p.method = "full"  # full | head | bitfit | lora | adapter
    p.lora = ml_collections.ConfigDict(
        dict(rank=8, alpha=16.0, dropout=0.1, targets=("query", "value"))
    )
    p.adapter = ml_collections.ConfigDict(
        dict(kind="houlsby", reduction_factor=16, activation="gelu")
    )

    config.optim = o = ml_collections.ConfigDict()
    o.lr = 2e-5
    o.weight_decay = 0.01
    o.warmup_ratio = 0.1
    o.schedule = "linear"  # linear | constant | cosine
    o.grad_clip = 1.0  # global-norm clipping; 0 turns it off
    o.accumulate = 1  # micro-batches per optimizer update

    config.train = t = ml_collections.ConfigDict()
    t.batch_size = 32
    t.epochs = 3
    t.max_steps = placeholder(int)  # stop after this many micro-steps (None: all epochs)
    t.eval_every = placeholder(int)  # also evaluate every N steps (None: once per epoch)
    t.log_every = 50
    t.seed = 0
    t.select_metric = "accuracy"  # validation metric that picks the best checkpoint
    t.eval_batch_size = 128
    t.early_stopping_patience = placeholder(int)  # stop after N evals not improving (None: off)
    t.early_stopping_min_delta = 0.0  # improving means beating the best by more than this
    t.remat = FieldReference(  # activation checkpointing per layer: False | True | policy name
        False, field_type=object
    )

    config.log = log = ml_collections.ConfigDict()
    log.tensorboard = True  # TensorBoard event files in the run folder (tensorboard --logdir)
    return config
