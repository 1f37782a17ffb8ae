"""Method presets (name -> config fields) and the `method=…,lr=…` argument of dataset configs.

A dataset config (configs/mrpc.py) takes big_vision's `get_config(arg)`:
`--config configs/mrpc.py:method=lora_q_r4,lr=5e-3`. A preset sets only the PEFT fields and a
learning rate for bert-base-sized models; `lr=` replaces that rate (MiniLM needs larger ones:
the studies in bertjax/studies/catalog.py give theirs).
"""

# Every preset names the fields it needs, even where they equal configs/base.py's defaults, so
# a preset means the same whatever the dataset config set before it.
METHODS = {
    "full": {"peft.method": "full", "optim.lr": 2e-5},
    "bitfit": {"peft.method": "bitfit", "optim.lr": 1e-3},  # the BitFit paper: 1e-4..1e-3
    "lora": {
        "peft.method": "lora",
        "peft.lora.targets": ("query", "value"),
        "peft.lora.rank": 8,
        "peft.lora.alpha": 16.0,
        "optim.lr": 5e-4,  # LoRA wants ~10-30x full fine-tuning's 2e-5
    },
    "houlsby16": {
        "peft.method": "adapter",
        "peft.adapter.kind": "houlsby",
        "peft.adapter.reduction_factor": 16,
        "optim.lr": 5e-4,  # adapters are usually trained at 1e-4..1e-3
    },
    **{
        f"lora_q_r{rank}": {
            "peft.method": "lora",
            "peft.lora.targets": ("query",),
            "peft.lora.rank": rank,
            "peft.lora.alpha": 2.0 * rank,
            "optim.lr": 5e-4,
        }
        for rank in (1, 4, 16)
    },
    "lora_qv_r32": {
        "peft.method": "lora",
        "peft.lora.targets": ("query", "value"),
        "peft.lora.rank": 32,
        "peft.lora.alpha": 64.0,
        "optim.lr": 5e-4,
    },
}
ARG_KEYS = ("method", "lr")


def parse_arg(arg: str | None, default_method: str) -> dict:
    """The argument's method and rate: "method=lora_q_r4,lr=5e-3" gives {"method":
    "lora_q_r4", "lr": 0.005}; a missing method is `default_method`, a missing lr None (the
    preset's rate)."""
    parsed = {"method": default_method, "lr": None}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in ARG_KEYS:
            raise ValueError(f"config argument {item!r}: expected method=NAME or lr=RATE")
        parsed[key] = value
    if parsed["method"] not in METHODS:
        raise ValueError(f"method={parsed['method']}: not a preset ({', '.join(METHODS)})")
    if parsed["lr"] is not None:
        try:
            parsed["lr"] = float(parsed["lr"])
        except ValueError:
            raise ValueError(f"lr={parsed['lr']}: expected a number like 5e-3") from None
    return parsed


def apply(config, arg: str | None, default_method: str = "full"):
    """`config` with the preset the argument names (and its lr), named `<name>_<method>`
    when a method is given."""
    parsed = parse_arg(arg, default_method)
    fields = dict(METHODS[parsed["method"]])
    if parsed["lr"] is not None:
        fields["optim.lr"] = parsed["lr"]
    config.update_from_flattened_dict(fields)
    if "method=" in (arg or ""):
        config.name = f"{config.name}_{parsed['method']}"
    return config
