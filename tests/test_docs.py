"""README.md, docs/ and peft/README.md: the README fits a screen, links resolve, code paths
exist, every docs page starts with its command, and the README's library example runs."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "peft" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEST_COMMAND = "python -m pytest -q -n auto --maxprocesses=4"


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", text, flags=re.S)


def test_readme_fits_a_screen_and_names_the_ci_test_command():
    readme = (REPO / "README.md").read_text()
    assert len(readme) <= 6000, len(readme)
    first = _code_blocks(readme, "bash")[0].splitlines()
    assert [line.split()[:2] for line in first] == [["make", "demo"], ["make", "test"]]
    assert TEST_COMMAND in first[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == TEST_COMMAND  # the README's test command is the one CI runs
    assert "Hugging Face's PyTorch `peft`" in readme and "virtual" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_code_paths_resolve(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    dead = [
        link
        for link in links
        if not re.match(r"[a-z]+:", link)
        and not (page.parent / link.split("#")[0]).resolve().exists()
    ]
    assert not dead, dead
    paths = set(re.findall(r"\b((?:bertjax|peft|tests|configs|bench)/[\w/]+\.py)\b", text))
    assert [p for p in sorted(paths) if not (REPO / p).is_file()] == []


@pytest.mark.parametrize("page", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_each_docs_page_starts_with_its_command(page):
    lines = [line for line in page.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ") and lines[1] == "```bash", lines[:2]


def test_readme_library_example_runs(tiny_bert_vocab_dir, capsys):
    code = _code_blocks((REPO / "README.md").read_text(), "python")[0]
    namespace = {"MODEL": str(tiny_bert_vocab_dir)}
    exec(compile(code, "README.md#library", "exec"), namespace)
    # the tiny BERT (2 layers, hidden 32): LoRA r8 on query and value, a [32, 8] and b [8, 32]
    # in each, 2 layers x 2 targets x 512 = 2,048, plus the head's 32 x 2 + 2 = 66
    trainable = int(capsys.readouterr().out.split()[0])
    assert trainable == 2 * 2 * (32 * 8 + 8 * 32) + 66
    assert namespace["logits"].shape == (1, 2)
