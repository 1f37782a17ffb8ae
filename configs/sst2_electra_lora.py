"""SST-2 with LoRA (rank 8 on query and value) on the ELECTRA-base discriminator.

    python train.py --config configs/sst2_electra_lora.py
Expected: not measured here (no hub access). For reference, the ELECTRA paper reports about 95
SST-2 dev accuracy for ELECTRA-base with full fine-tuning; this LoRA run's number is unmeasured.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "sst2_electra_lora"
    config.model = "google/electra-base-discriminator"
    config.data.name, config.data.subset = "glue", "sst2"
    config.data.text_fields = ("sentence",)
    config.data.labels = ("negative", "positive")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.peft.method = "lora"
    config.peft.lora.targets = ("query", "value")
    config.optim.lr = 5e-4
    return config
