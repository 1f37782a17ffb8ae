"""SST-2 with LoRA (rank 8 on q_lin and v_lin, Hugging Face peft's DistilBERT names) on
distilbert-base-uncased.

    python train.py --config configs/sst2_distilbert_lora.py
Expected: not measured here (no hub access). For reference, the DistilBERT paper reports 91.3
SST-2 dev accuracy with full fine-tuning; this LoRA run's number is unmeasured.
"""

from configs import sst2


def get_config():
    config = sst2.get_config("method=lora")
    config.name = "sst2_distilbert_lora"
    config.model = "distilbert-base-uncased"
    config.peft.lora.targets = ("q_lin", "v_lin")  # DistilBERT has no query/value layers
    return config
