"""bertjax.hub.encoder: runs encode with transformers' configured tokenizer, read back from a
cache without importing transformers; the ids equal transformers' own, family by family."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax.hub import encoder
from bertjax.hub.pretrained import load_encoder, load_tokenizer, tokenizer_hash

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    "a gripping, funny film.",
    "",
    "Ünïcödé naïve café — 東京 😀 [MASK] <mask> [SEP]",
    " ".join(["it is a long sentence that will be truncated"] * 20),
]
PAIRS = [
    "the second text of the pair",
    " ".join(["and a long second text"] * 30),
    "",
    "short",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "tokenizers"
    monkeypatch.setenv("BERTJAX_TOKENIZER_CACHE", str(folder))
    return folder


def _deberta_folder(folder: Path) -> Path:
    from transformers import DebertaV2Tokenizer

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    pieces = ["▁the", "▁film", "▁is", "▁good", "▁a", "▁long", "?", ".", ","]
    pieces += [f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab = [(s, 0.0) for s in specials] + [(p, -1.0 - i) for i, p in enumerate(pieces)]
    DebertaV2Tokenizer(vocab=vocab, unk_id=3).save_pretrained(folder)
    return folder


def _roberta_folder(folder: Path) -> Path:
    from transformers import RobertaTokenizerFast

    source = SHARED / "tokenizers" / "roberta-base"
    if not source.is_dir():
        pytest.skip(f"no roberta tokenizer files at {source}")
    RobertaTokenizerFast.from_pretrained(str(source)).save_pretrained(folder)
    return folder


def _folders(minilm_path, tiny_distilbert_vocab_dir, tmp_path):
    return {
        "bert (MiniLM)": minilm_path,
        "distilbert": tiny_distilbert_vocab_dir,
        "roberta": _roberta_folder(tmp_path / "roberta"),
        "deberta-v2": _deberta_folder(tmp_path / "deberta"),
    }


@pytest.mark.parametrize("max_length", [128, 16])
def test_encoder_ids_equal_transformers(
    cache, minilm_path, tiny_distilbert_vocab_dir, tmp_path, max_length
):
    """Texts and pairs (empty, unicode, special-token strings, longer than max_length:
    longest-first truncation), first load (through transformers) and second (the cache)."""
    for family, folder in _folders(minilm_path, tiny_distilbert_vocab_dir, tmp_path).items():
        want_tok = load_tokenizer(folder)
        for load in ("first", "cached"):
            got_tok = load_encoder(folder)
            assert isinstance(got_tok, encoder.Encoder), family
            assert got_tok.pad_token_id == want_tok.pad_token_id, family
            for pair in (False, True):
                args = (TEXTS, PAIRS) if pair else (TEXTS,)
                want = want_tok(*args, truncation=True, max_length=max_length)
                got = got_tok(*args, truncation=True, max_length=max_length)
                assert got["input_ids"] == want["input_ids"], (family, load, pair)
                assert ("token_type_ids" in got) == ("token_type_ids" in want), family
                if "token_type_ids" in want:
                    assert got["token_type_ids"] == want["token_type_ids"], (family, pair)
                count = want_tok.num_special_tokens_to_add(pair=pair)
                assert got_tok.num_special_tokens_to_add(pair=pair) == count, family
            # the run fingerprint of old run folders (base.json) stays the same
            assert tokenizer_hash(got_tok) == tokenizer_hash(want_tok), family
        assert len(list(cache.glob("*.json"))) >= 1


def test_a_cached_tokenizer_loads_without_transformers(cache, minilm_path):
    load_encoder(minilm_path)  # through transformers, saved
    code = (
        "import json, sys; from bertjax.hub.pretrained import load_encoder; "
        f"tok = load_encoder({str(minilm_path)!r}); "
        "out = tok(['a fine film'], truncation=True, max_length=8); "
        "print(json.dumps([out['input_ids'], sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('transformers', 'torch'))]))"
    )
    env = dict(os.environ, BERTJAX_TOKENIZER_CACHE=str(cache))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    ids, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == []
    assert (
        ids
        == load_tokenizer(minilm_path)(["a fine film"], truncation=True, max_length=8)["input_ids"]
    )


def test_a_changed_tokenizer_file_or_a_cut_cache_entry_loads_anew(cache, tmp_path, minilm_path):
    """The key is the files' bytes: a vocabulary edit is never served the old ids; an entry
    cut short (a crash while writing elsewhere) is made again, not an error."""
    folder = tmp_path / "tok"
    load_tokenizer(minilm_path).save_pretrained(folder)
    before = load_encoder(folder)(["good"], truncation=True, max_length=8)["input_ids"]
    definition = json.loads((folder / "tokenizer.json").read_text())
    vocab = definition["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]
    (folder / "tokenizer.json").write_text(json.dumps(definition))
    (folder / "vocab.txt").unlink(missing_ok=True)  # transformers would rebuild from it
    after = load_encoder(folder)(["good"], truncation=True, max_length=8)["input_ids"]
    assert after != before
    assert after == load_tokenizer(folder)(["good"], truncation=True, max_length=8)["input_ids"]
    for entry in cache.glob("*.json"):
        entry.write_text(entry.read_text()[:100])
    assert load_encoder(folder)(["good"], truncation=True, max_length=8)["input_ids"] == after


def test_the_cache_can_be_off(monkeypatch, tmp_path, minilm_path):
    monkeypatch.setenv("BERTJAX_TOKENIZER_CACHE", "off")
    monkeypatch.setattr(encoder, "DEFAULT_DIR", tmp_path / "never")
    tok = load_encoder(minilm_path)
    assert tok(["a film"], truncation=True, max_length=8)["input_ids"][0][0] == 101
    assert not (tmp_path / "never").exists()
