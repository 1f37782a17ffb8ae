"""Hugging Face formats both ways: state dicts, model folders, hub ids, peft adapters, export."""
