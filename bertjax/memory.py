"""`python -m bertjax.memory`: the training-memory table (bertjax/train/memory.py)."""

from bertjax.train.memory import command

if __name__ == "__main__":
    command()
