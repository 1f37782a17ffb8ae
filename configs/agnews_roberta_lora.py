"""AG News topics (4 classes) with LoRA on roberta-base: rank 8 (alpha 16) on query and value.

    python train.py --config configs/agnews_roberta_lora.py
Trains the 24 low-rank update pairs (768x8 and 8x768 each) and the classifier; the base stays
frozen and checkpoints hold only what trains. lr 5e-4: LoRA wants ~10-30x full
fine-tuning's 2e-5. Offline (MiniLM standing in, a train.csv beside the shared test.csv):
the commands in configs/agnews_roberta_full.py with this config file.
Expected: not measured here (no roberta-base weights offline); LoRA at this size usually lands
within about half a point of full fine-tuning's ~0.94-0.95 test accuracy.
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
