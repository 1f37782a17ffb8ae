"""Fine-tunes a BERT-family encoder as a config file says; see bertjax/train/command.py.

python train.py --config configs/sst2_lora.py [--config.optim.lr=1e-4 ...] [--overwrite]
python train.py --config configs/sst2_lora.py --help   # every config field, its value, meaning
"""

from bertjax.train.command import run

if __name__ == "__main__":
    run()
