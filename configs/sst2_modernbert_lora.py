"""SST-2 with LoRA (rank 8 on Wqkv, ModernBERT's fused query/key/value projection) on
answerdotai/ModernBERT-base.

    python train.py --config configs/sst2_modernbert_lora.py
Expected: not measured here (no hub access). For reference, the ModernBERT paper reports
96.0 SST-2 dev accuracy for ModernBERT-base with full fine-tuning; this LoRA run's number is
unmeasured.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "sst2_modernbert_lora"
    config.model = "answerdotai/ModernBERT-base"
    config.data.name, config.data.subset = "glue", "sst2"
    config.data.text_fields = ("sentence",)
    config.data.labels = ("negative", "positive")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.peft.method = "lora"
    config.peft.lora.targets = ("Wqkv",)  # fused query/key/value
    config.optim.lr = 5e-4
    return config
