"""Defaults for every run (bertjax/train/defaults.py); task configs import get_config() from
here and override fields. Not a task by itself: it trains nothing until `model` and `data.*`
are set."""

from bertjax.train.defaults import get_config

__all__ = ["get_config"]
