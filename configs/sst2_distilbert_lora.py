"""SST-2 with LoRA (rank 8 on q_lin and v_lin, Hugging Face peft's DistilBERT names) on
distilbert-base-uncased.

    python train.py --config configs/sst2_distilbert_lora.py
Expected: not measured here (no hub access). For reference, the DistilBERT paper reports 91.3
SST-2 dev accuracy with full fine-tuning; this LoRA run's number is unmeasured.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "sst2_distilbert_lora"
    config.model = "distilbert-base-uncased"
    config.data.name, config.data.subset = "glue", "sst2"
    config.data.text_fields = ("sentence",)
    config.data.labels = ("negative", "positive")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.peft.method = "lora"
    config.peft.lora.targets = ("q_lin", "v_lin")  # DistilBERT has no query/value layers
    config.optim.lr = 5e-4
    return config
