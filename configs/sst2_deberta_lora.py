"""SST-2 with LoRA (rank 8 on query_proj and value_proj, Hugging Face peft's DeBERTa names) on
microsoft/deberta-v3-base.

    python train.py --config configs/sst2_deberta_lora.py
Expected: not measured here (no hub access). For reference, the DeBERTa-v3 paper reports 96.0
SST-2 dev accuracy for deberta-v3-base with full fine-tuning; this LoRA run's number is
unmeasured. The tokenizer needs sentencepiece (a dependency of bertjax).
"""

from configs import sst2


def get_config():
    config = sst2.get_config("method=lora")
    config.name = "sst2_deberta_lora"
    config.model = "microsoft/deberta-v3-base"
    config.peft.lora.targets = ("query_proj", "value_proj")  # DeBERTa's attention projections
    return config
