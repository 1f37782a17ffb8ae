"""Config to objects, pure train/eval steps, the training loop, evaluation and inference."""
