"""SST-2 with LoRA (rank 8 on Wqkv, ModernBERT's fused query/key/value projection) on
answerdotai/ModernBERT-base.

    python train.py --config configs/sst2_modernbert_lora.py
Expected: not measured here (no hub access). For reference, the ModernBERT paper reports
96.0 SST-2 dev accuracy for ModernBERT-base with full fine-tuning; this LoRA run's number is
unmeasured.
"""

from configs import sst2


def get_config():
    config = sst2.get_config("method=lora")
    config.name = "sst2_modernbert_lora"
    config.model = "answerdotai/ModernBERT-base"
    config.peft.lora.targets = ("Wqkv",)  # fused query/key/value
    return config
