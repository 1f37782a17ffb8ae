"""The tokenizer a run encodes its data with, without importing transformers once it was seen.

A run needs of its tokenizer only `tokenizer(texts[, pairs], truncation=True,
max_length=n)`, its pad id and its special-token counts. Behind a fast transformers
tokenizer that is a `tokenizers.Tokenizer` as transformers configured it from the checkpoint's
files (in transformers 5 a BERT tokenizer is rebuilt from vocab.txt and tokenizer_config.json,
not read from tokenizer.json), plus which outputs it returns. Importing transformers costs
1.5-2.5 s of every run's start (it imports torch wherever torch is installed), so the first
load goes through transformers and saves that configured backend and those settings under
~/.cache/bertjax/tokenizers ($BERTJAX_TOKENIZER_CACHE; "off": no cache), keyed by the
tokenizer's files (names and bytes) and the transformers and tokenizers versions; later loads
read it back with `tokenizers` alone. A tokenizer without a `tokenizers` backend (a slow,
Python one) is used through transformers as before.
"""

import hashlib
import json
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "bertjax" / "tokenizers"
# Files AutoTokenizer reads (config.json names the model type when tokenizer_config.json
# names no class).
TOKENIZER_FILES = re.compile(
    r"(tokenizer.*|vocab.*|merges\.txt|special_tokens_map\.json|added_tokens\.json|"
    r".*\.model|config\.json|preprocessor_config\.json)"
)
FORMAT = 1  # of the saved settings; a change makes a new key


class Encoder:
    """The encoding part of a fast transformers tokenizer: its configured `tokenizers`
    backend and the outputs transformers returns for it (`model_input_names`)."""

    def __init__(self, backend, settings: dict):
        self.backend_tokenizer = backend
        self.model_input_names = list(settings["model_input_names"])
        self.truncation_side = settings["truncation_side"]
        self.pad_token_id = settings["pad_token_id"]
        backend.encode_special_tokens = settings["split_special_tokens"]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend_tokenizer.num_special_tokens_to_add(pair)

    def __call__(self, text, text_pair=None, *, truncation: bool = True, max_length: int):
        """input_ids (and token_type_ids where transformers returns them) of a batch of
        texts or pairs, as transformers' `tokenizer(text, text_pair, truncation=True,
        max_length=max_length)` returns them: lists, no padding."""
        backend = self.backend_tokenizer
        if truncation:
            backend.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction=self.truncation_side
            )
        else:
            backend.no_truncation()
        backend.no_padding()
        batch = list(zip(text, text_pair, strict=True)) if text_pair is not None else list(text)
        encodings = backend.encode_batch(batch, add_special_tokens=True)
        out = {"input_ids": [e.ids for e in encodings]}
        if "token_type_ids" in self.model_input_names:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        return out


def cache_dir() -> Path | None:
    folder = os.environ.get("BERTJAX_TOKENIZER_CACHE") or DEFAULT_DIR
    return None if str(folder) == "off" else Path(folder)


def files_key(folder: Path) -> str:
    """sha256 of the tokenizer files of `folder` (names and bytes) and the library versions
    that turn them into a tokenizer."""
    digest = hashlib.sha256(f"format {FORMAT}".encode())
    for package in ("transformers", "tokenizers"):
        digest.update(f"{package} {metadata.version(package)}".encode())
    for path in tokenizer_files(folder):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def tokenizer_files(folder) -> list[Path]:
    """The files of `folder` that define its tokenizer (TOKENIZER_FILES), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if TOKENIZER_FILES.fullmatch(p.name))


def settings_of(tokenizer) -> dict:
    return dict(
        model_input_names=list(tokenizer.model_input_names),
        truncation_side=tokenizer.truncation_side,
        pad_token_id=tokenizer.pad_token_id,
        split_special_tokens=bool(getattr(tokenizer, "split_special_tokens", False)),
    )


def load_encoder(folder: Path, load_tokenizer):
    """An Encoder for the tokenizer in `folder` (a local folder), from the cache when it
    holds one, else through `load_tokenizer(folder)` (transformers), then saved; the
    transformers tokenizer itself when it has no `tokenizers` backend."""
    from tokenizers import Tokenizer

    where = cache_dir()
    saved = where / f"{files_key(folder)}.json" if where is not None else None
    if saved is not None and saved.is_file():
        try:
            entry = json.loads(saved.read_text(encoding="utf-8"))
            return Encoder(Tokenizer.from_str(entry["backend"]), entry["settings"])
        except (ValueError, KeyError, OSError):
            pass  # unreadable (e.g. cut short): made again below
    tokenizer = load_tokenizer(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer
    entry = dict(backend=backend.to_str(), settings=settings_of(tokenizer))
    if saved is not None:
        _write_atomic(saved, json.dumps(entry))
    return Encoder(Tokenizer.from_str(entry["backend"]), entry["settings"])


def _write_atomic(path: Path, text: str) -> None:
    """Whole or not at all (processes may load the same tokenizer at once); a cache that
    cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
        ) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError:
        pass
