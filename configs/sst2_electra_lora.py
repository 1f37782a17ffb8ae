"""SST-2 with LoRA (rank 8 on query and value) on the ELECTRA-base discriminator.

    python train.py --config configs/sst2_electra_lora.py
Expected: not measured here (no hub access). For reference, the ELECTRA paper reports about 95
SST-2 dev accuracy for ELECTRA-base with full fine-tuning; this LoRA run's number is unmeasured.
"""

from configs import sst2


def get_config():
    config = sst2.get_config("method=lora")
    config.name = "sst2_electra_lora"
    config.model = "google/electra-base-discriminator"
    return config
