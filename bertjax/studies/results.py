"""Writes RESULTS.md from the study folders `make results` fills (studies/catalog.py's studies).

    python -m bertjax.results runs/results [--records results/runs --previous RESULTS.md] \
        [--images results --findings results/findings.md] > RESULTS.md.new

With --records, each finished run's small files (config, labels, metrics, summary; no
checkpoints) and each sweep's report are first copied from runs/results into the records
folder, which is committed: the page is written from it, so studies run on other machines or
in other sessions stay on the page. A study with no records keeps its section from --previous
(marked as such). Each study's table comes from bertjax.studies.report (the same as report.py), with
the majority-class baseline and each row's margin over it; its learning curves (mean ± std
over seeds) are copied into the images folder (committed beside RESULTS.md) and linked; the
number the published study reports sits beside ours, with the model it was measured on. A
study with neither says how to run it. Only what the runs measured is printed.
"""

import argparse
import csv
import platform
import shutil
import tempfile
from pathlib import Path

import jax

from bertjax import runs
from bertjax.studies import catalog, report

CATALOG_FILE = "bertjax/studies/catalog.py"
MEMORY = ("memory", "Training memory: the analytic estimate against XLA's compiled memory")
# What a run's record keeps (bertjax.studies.report reads these; checkpoints stay behind)
RECORD_FILES = (runs.CONFIG_FILE, runs.LABELS_FILE, runs.METRICS_FILE, runs.SUMMARY_FILE)
KEPT_NOTE = (
    "_Kept as an earlier `make results` wrote it: this study has no run records in the "
    "records folder (its run folders stayed on the machine that ran it)._"
)
NOT_RUN = ("No finished run yet:", "Not run yet.")


def archive(out: Path, records: Path) -> None:
    """Copies the record of every finished run under `out` (RECORD_FILES), each sweep's
    sweep.md/sweep.csv and the memory tables into `records`, at the same relative paths.
    Records already there from other runs stay."""
    sources = [(run, RECORD_FILES) for run in (f.parent for f in out.rglob(runs.SUMMARY_FILE))]
    sources += [(f.parent, ("sweep.md", "sweep.csv")) for f in out.rglob("sweep.csv")]
    sources += [(out / MEMORY[0], tuple(f.name for f in (out / MEMORY[0]).glob("*.md")))]
    for folder, names in sources:
        for name in names:
            if (folder / name).is_file():
                target = records / folder.relative_to(out) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, target)


def previous_sections(page: str) -> dict[str, str]:
    """A RESULTS.md's sections with results, by their "## " heading line (each up to the
    next one); sections that only say a study has not run are left out."""
    sections, heading = {}, None
    for line in page.splitlines():
        if line.startswith("## "):
            heading = line
        if heading is not None:
            sections[heading] = sections.get(heading, "") + line + "\n"
    return {h: s for h, s in sections.items() if not any(p in s for p in NOT_RUN)}


def section(title: str, fresh: str | None, kept: dict[str, str], not_run: str) -> str:
    """A study's section: `fresh` (rebuilt from its records) where it has runs, else its
    section of the previous page (`kept`, marked as kept), else `not_run` under its title."""
    if fresh is not None:
        return fresh
    if f"## {title}" in kept:
        return kept_section(kept[f"## {title}"])
    return f"## {title}\n\n{not_run}\n"


def _has_runs(folder: Path) -> bool:
    return any(folder.rglob(runs.SUMMARY_FILE))


def kept_section(section: str) -> str:
    """A previous page's section, marked (once) as kept rather than regenerated."""
    heading, _, rest = section.strip().partition("\n")
    rest = rest.strip().removeprefix(KEPT_NOTE).strip()
    return f"{heading}\n\n{KEPT_NOTE}\n\n{rest}\n"


def _machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    devices = f"{jax.local_device_count()} {jax.default_backend()} device(s)"
    return f"{cpu}, {devices}, jax {jax.__version__}"


def study_section(folder: Path, study: catalog.Study, images: Path | None) -> str:
    """One study: its command, run count and summed wall time, the published number, the
    report's tables, its learning-curve images and each sweep's sweep.md."""
    name, title = study.name, study.title
    with tempfile.TemporaryDirectory() as scratch:  # report.md/csv: the study folder stays as is
        result = report.write_report([folder], Path(scratch), list(study.metrics))
        curves = [f for f in result["files"] if f.suffix == ".png"]
        if images is not None:
            images.mkdir(parents=True, exist_ok=True)
            for png in curves:
                shutil.copyfile(png, images / f"{name}_{png.name}")
    found = [run for group in result["groups"] for run in group["runs"]]
    lines = [
        f"## {title}",
        "",
        f"`{study_command(study)}` (sizes and learning rates: {CATALOG_FILE}); {len(found)} runs, "
        f"{study_minutes(found):.0f} min of training (wall time, a vectorized group counted "
        "once).",
        "",
        study.published,
        "",
        _demote(result["markdown"].replace("# Results", "", 1).strip(), 1),
    ]
    if images is not None:
        for png in curves:
            lines += ["", f"![{title}: validation curves]({images.name}/{name}_{png.name})"]
    for sweep_md in sorted(folder.rglob("sweep.md")):
        if _cells(sweep_md.with_name("sweep.csv")) > 1:  # one cell's repeats the table above
            lines += ["", f"### {sweep_md.parent.name} sweep", "", _demote(sweep_md.read_text(), 3)]
    return "\n".join(lines) + "\n"


def study_command(study: catalog.Study) -> str:
    """What runs a study (the Makefile's target for `python -m bertjax.studies run NAME`)."""
    return f"make {study.name}"


def header() -> str:
    """Where the runs' data and checkpoint came from: the studies' settings."""
    roots = ", ".join(dict.fromkeys(s.data_root for s in catalog.STUDIES))
    models = ", ".join(dict.fromkeys(s.model.replace("_", "-") for s in catalog.STUDIES))
    return f"Real runs on {roots} with the real {catalog.MODEL_TITLE} checkpoint ({models})"


def study_minutes(found: list[dict]) -> float:
    """Wall minutes of a study's runs (report.load_run records): the summed `wall_time_s`,
    each vectorized group once (its members share a sweep folder, a batch size and the
    group's epoch times)."""
    seconds = {}
    for run in found:
        summary = run["summary"]
        group = (run["path"].parent, run["config"].get("train.batch_size"))
        seconds[group + (summary.get("seconds_per_epoch"),)] = summary.get("wall_time_s") or 0
    return sum(seconds.values()) / 60


def _cells(sweep_csv: Path) -> int:
    """Grid cells of a sweep: its sweep.csv rows (cell, the grid's keys, [seed], status, …)
    with the seeds of one cell counted once."""
    with open(sweep_csv, newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    last = min(header.index(c) for c in ("seed", "status") if c in header)
    return len({tuple(row[1:last]) for row in rows})


def memory_section(folder: Path) -> str:
    """The tables `make memory` wrote (python -m bertjax.memory), one per shape."""
    lines = [
        f"## {MEMORY[1]}",
        "",
        "`make memory` (`python -m bertjax.memory`, nothing trains).",
    ]
    for table in sorted(folder.glob("*.md")):
        lines += ["", table.read_text().strip().replace("\n", "\n\n", 1)]  # title, table
    return "\n".join(lines) + "\n"


def _demote(markdown: str, levels: int) -> str:
    """Headings pushed `levels` deeper, so included reports nest under their study."""
    return "\n".join(
        "#" * levels + line if line.startswith("#") else line for line in markdown.splitlines()
    ).strip()


def main(
    out: Path,
    images: Path | None = None,
    findings: Path | None = None,
    previous: Path | None = None,
) -> str:
    """RESULTS.md's text for the study folders under `out`; curve PNGs go to `images`; the
    hand-written `findings` (what the numbers say, and how far) go first; a study without
    runs keeps its section of the `previous` page, if that has one."""
    kept = previous_sections(previous.read_text()) if previous and previous.is_file() else {}
    parts = [
        "# Results",
        "",
        f"{header()}, regenerated by `make results`. "
        f"Machine: {_machine()}. Metrics are validation (the best checkpoint's) and test (that "
        "checkpoint once, at the end); mean ± sample std over seeds; times include compilation.",
        "",
    ]
    if findings is not None and findings.is_file():
        parts += [findings.read_text().strip(), ""]
    for study in catalog.STUDIES:
        folder = out / study.name
        fresh = study_section(folder, study, images) if _has_runs(folder) else None
        parts.append(section(study.title, fresh, kept, f"{NOT_RUN[0]} `{study_command(study)}`."))
    memory = out / MEMORY[0]
    fresh = memory_section(memory) if memory.is_dir() else None
    parts.append(section(MEMORY[1], fresh, kept, NOT_RUN[1]))
    return "\n".join(parts)


def command() -> None:
    """python -m bertjax.results [out] [--records …] [--previous …]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="runs/results", type=Path)
    parser.add_argument("--records", type=Path, help="copy run records here; the page reads it")
    parser.add_argument("--previous", type=Path, help="the page whose sections studies keep")
    parser.add_argument("--images", default=Path("results"), type=Path)
    parser.add_argument("--findings", default=Path("results/findings.md"), type=Path)
    args = parser.parse_args()
    if args.records is not None and args.out.is_dir():
        archive(args.out, args.records)
    print(main(args.records or args.out, args.images, args.findings, args.previous))


if __name__ == "__main__":
    command()
