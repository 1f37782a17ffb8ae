"""A seconds-long run for the tests: 64 training and 32 evaluation examples, LoRA rank 2.

Tests set `model` to a tiny random checkpoint folder (the tests/conftest.py fixtures) and
`data.path` to a small data folder, then run training and evaluation end to end. Both are ""
here because neither exists until a test makes it.
By hand:
    python train.py --config configs/tiny.py --config.model=<checkpoint folder> \
        --config.data.path=<data folder>
Expected: nothing meaningful; it checks that the pipeline runs, not that it learns.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.name = "tiny"
    config.model = ""  # set by tests to a tiny checkpoint folder
    config.data.path = ""  # set by tests to a small local data folder
    config.data.max_length = 32
    config.data.max_train_examples = 64
    config.data.max_eval_examples = 32
    config.peft.method = "lora"
    config.peft.lora.rank = 2
    config.train.epochs = 1
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.train.log_every = 5
    return config
