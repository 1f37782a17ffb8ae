"""Encoder families as Flax modules named like the Hugging Face weights, and the family table."""
