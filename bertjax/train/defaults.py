"""Defaults for every run; configs/*.py import get_config() and override fields.

Not a task by itself: it trains nothing useful until `model` and `data.*` are set. Every field
has a trailing comment: `python train.py --help` prints them as the field's meaning (here in
the package, so the installed CLI's --help has them without the repository's configs/).
"""

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "base"  # run name (train.py: a given workdir's name); workdir: runs/<name>
    config.model = "bert-base-uncased"  # local folder or hub id
    config.model_layers = placeholder(
        tuple
    )  # keep these layers (0,2,4: a 3-layer student); None: all
    config.num_labels = placeholder(int)  # None: from the data's labels
    config.workdir = placeholder(str)  # run folder; None: runs/<name>
    config.dtype = "auto"  # matmuls: auto (bfloat16 on native bf16 hardware) | float32 | bfloat16

    config.data = data = ml_collections.ConfigDict()
    data.name = placeholder(str)  # hub dataset, e.g. "glue" (with subset "sst2"), "imdb"
    data.subset = placeholder(str)  # hub dataset configuration, e.g. "sst2" of "glue"
    data.path = placeholder(str)  # or a local folder with {train,dev,test}.{tsv,csv,jsonl,…}
    data.text_fields = ("sentence",)  # one text column, or two for a sentence pair
    data.label_field = "label"  # label column: strings, integer class ids or floats
    data.labels = placeholder(tuple)  # class names in id order (negative,positive); None: train
    data.splits = splits = ml_collections.ConfigDict()
    splits.train = "train"  # file/split name of the training data
    splits.validation = "validation"  # picks the best checkpoint ("dev" files match too)
    splits.test = "test"  # evaluated once at the end with the best checkpoint; "" for none
    data.validation_fraction = placeholder(float)  # carve validation from train (IMDb)
    data.max_length = 128  # tokens per example (pairs truncated longest-first)
    data.packing = True  # several examples per row (train and eval): one shape, ~no padding
    data.max_train_examples = placeholder(int)  # seeded random subset of train; None: all
    data.max_eval_examples = placeholder(int)  # seeded subset of validation/test; None: all

    config.peft = p = ml_collections.ConfigDict()
    p.method = "full"  # full | head | bitfit | lora | dora | ia3 | adapter
    # more modules every PEFT method trains whole beside the head, as '/' paths, e.g.
    # ("bert/pooler",) for a checkpoint whose pooler never trained (sentence-transformers)
    p.modules_to_save = placeholder(tuple)  # Hugging Face peft's modules_to_save; None: none
    p.bitfit = bitfit = ml_collections.ConfigDict()
    bitfit.head = "all"  # BitFit's head: all (trains whole) | bias (its biases only)
    # lora and dora (LoRA + a learned magnitude per output unit) both read peft.lora.
    p.lora = lora = ml_collections.ConfigDict()
    lora.rank = 8  # LoRA rank r of the update A·B
    lora.alpha = 16.0  # update scaled by alpha / rank
    lora.dropout = 0.1  # dropout on the LoRA input, in [0, 1)
    lora.targets = ("query", "value")  # layer-name suffixes, "all-linear", or one regex on the path
    # (IA)3, Hugging Face peft's defaults for BERT/RoBERTa: scale key/value outputs and the
    # inputs of the feed-forward ("output.dense", which also names attention/output/dense).
    p.ia3 = ia3 = ml_collections.ConfigDict()
    ia3.targets = ("key", "value", "output.dense")  # (IA)3 layers whose outputs are scaled
    ia3.feedforward = ("output.dense",)  # of those, the ones whose inputs are scaled instead
    p.adapter = adapter = ml_collections.ConfigDict()
    adapter.kind = "houlsby"  # houlsby (after attention and FFN) | pfeiffer (after FFN)
    adapter.reduction_factor = 16  # adapter width = hidden size / reduction_factor
    adapter.activation = "gelu"  # adapter nonlinearity

    config.optim = o = ml_collections.ConfigDict()
    o.lr = 2e-5  # peak learning rate (AdamW), > 0
    o.weight_decay = 0.01  # AdamW decoupled weight decay (not on biases/LayerNorm)
    o.warmup_ratio = 0.1  # fraction of optimizer steps warming up linearly, in [0, 1)
    o.schedule = "linear"  # linear | constant | cosine
    o.grad_clip = 1.0  # global-norm clipping; 0 turns it off
    o.accumulate = 1  # micro-batches per optimizer update

    config.train = t = ml_collections.ConfigDict()
    t.batch_size = 32  # examples per step, divisible by the device count
    t.epochs = 3  # passes over the training data
    t.max_steps = placeholder(int)  # stop after this many micro-steps (None: all epochs)
    t.eval_every = placeholder(int)  # also evaluate every N steps (None: each epoch, ≥ 4 a run)
    t.log_every = placeholder(int)  # steps between train-loss records; None: ~20 per epoch, ≤ 50
    t.seed = 0  # data order, subsets, new weights and dropout
    t.select_metric = "accuracy"  # validation metric that picks the best checkpoint
    t.eval_batch_size = 128  # examples per evaluation step, divisible by the device count
    t.early_stopping_patience = placeholder(int)  # stop after N evals not improving (None: off)
    t.early_stopping_min_delta = 0.0  # improving means beating the best by more than this
    t.remat = FieldReference(False, field_type=object)  # remat per layer: False|True|policy
    # distillation loss: alpha·CE(labels) + (1 − alpha)·T²·KL(teacher/T ‖ student/T)
    config.distill = d = ml_collections.ConfigDict()
    d.teacher = placeholder(str)  # finished run folder, merged export or HF classifier; None: off
    d.temperature = 2.0  # T, > 0: higher softens both distributions (the T² keeps the scale)
    d.alpha = 0.5  # weight of the hard-label loss, in [0, 1]; 0: the teacher's targets only
    d.transfer = placeholder(str)  # texts the teacher labels (file or data folder); None: train's
    config.log = log = ml_collections.ConfigDict()
    log.tensorboard = True  # TensorBoard event files in the run folder (tensorboard --logdir)
    return config
