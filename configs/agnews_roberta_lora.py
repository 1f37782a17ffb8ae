"""AG News topics (4 classes) with LoRA on roberta-base: rank 8 (alpha 16) on query and value.

    python train.py --config configs/agnews_roberta_lora.py
Trains the 24 low-rank update pairs (768x8 and 8x768 each) and the classifier; the base stays
frozen and checkpoints hold only what trains. lr 5e-4: LoRA wants ~10-30x full
fine-tuning's 2e-5. Offline (MiniLM standing in, a train.csv beside the shared test.csv):
the commands in configs/agnews_roberta_full.py with this config file.
Expected: not measured here (no roberta-base weights offline); LoRA at this size usually lands
within about half a point of full fine-tuning's ~0.94-0.95 test accuracy.
"""

from configs import agnews


def get_config():
    config = agnews.get_config("method=lora")
    config.name = "agnews_roberta_lora"
    return config
