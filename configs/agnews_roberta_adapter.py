"""AG News topics (4 classes) with Houlsby adapters on roberta-base, reduction factor 16.

    python train.py --config configs/agnews_roberta_adapter.py
Adds a 768 -> 48 -> 768 bottleneck after the attention output and after the FFN output of
each of the 12 layers; those, every LayerNorm and the classifier train. lr 5e-4
(adapters train at 1e-4..1e-3). Offline (MiniLM standing in, a train.csv beside the shared
test.csv): the commands in configs/agnews_roberta_full.py with this config file.
Expected: not measured here (no roberta-base weights offline); Houlsby adapters usually land
within about half a point of full fine-tuning's ~0.94-0.95 test accuracy.
"""

from configs import agnews


def get_config():
    config = agnews.get_config("method=houlsby16")
    config.name = "agnews_roberta_adapter"
    return config
