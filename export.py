"""Exports a trained run for transformers / Hugging Face peft users.

    python export.py --ckpt runs/sst2_lora --out exported/ [--format merged|peft] [--replace]

merged (default): config.json (with id2label), model.safetensors (LoRA/DoRA/IA3 merged) and
the tokenizer: `transformers.pipeline("text-classification", model="exported/")` as is.
peft: adapter_config.json + adapter_model.safetensors + the tokenizer, for
`peft.AutoPeftModelForSequenceClassification.from_pretrained("exported/")`.
A non-empty --out is refused unless --replace; the export is written beside it and swapped in
whole, so --out never mixes two exports or holds a half-written file.
"""

from absl import app, flags

from bertjax import cli
from bertjax.hub import export

_CKPT = flags.DEFINE_string("ckpt", None, "Run folder written by train.py.", required=True)
_OUT = flags.DEFINE_string("out", None, "Folder to write.", required=True)
_FORMAT = flags.DEFINE_enum("format", "merged", list(export.FORMATS), "What to write.")
_REPLACE = flags.DEFINE_bool("replace", False, "Replace a non-empty --out folder.")


def main(argv):
    del argv
    cli.stop_on_signals()
    cli.setup_logging()
    try:
        print(export.export(_CKPT.value, _OUT.value, _FORMAT.value, _REPLACE.value))
    except (ValueError, OSError) as err:
        cli.fail(err)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
