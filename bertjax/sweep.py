"""Grid sweeps: one run folder per cell (× seed) under a sweep folder, the best cell by its
validation metric, and a report: sweep.md, sweep.csv and heatmap.png."""

import copy
import csv
import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path

import matplotlib
import ml_collections
import numpy as np

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt  # noqa: E402

from bertjax import runs, training  # noqa: E402

log = logging.getLogger("bertjax")

# The BERT miniatures' published fine-tuning grid (Turc et al., 2019).
DEFAULT_GRID = {"optim.lr": (3e-4, 1e-4, 5e-5, 3e-5), "train.batch_size": (8, 16, 32, 64, 128)}
REPORT_FILE, CSV_FILE, HEATMAP_FILE = "sweep.md", "sweep.csv", "heatmap.png"
NOT_SWEPT = ("name", "workdir")


def _field_type(config: ml_collections.ConfigDict, key: str) -> type:
    node, (*parents, leaf) = config, key.split(".")
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ValueError(f"--grid key {key!r} is not a config field")
        node = node[part]
    if (
        not isinstance(node, ml_collections.ConfigDict)
        or leaf not in node
        or isinstance(node[leaf], ml_collections.ConfigDict)
        or key in NOT_SWEPT
    ):
        raise ValueError(f"--grid key {key!r} is not a config field")
    return node.get_type(leaf)


def _parse_value(key: str, text: str, kind: type):
    text = text.strip()
    try:
        if kind is bool:
            return {"true": True, "false": False}[text.lower()]
        if kind in (int, float, str):
            return kind(text)
    except (KeyError, ValueError):
        raise ValueError(f"--grid {key}: {text!r} is not a valid {kind.__name__}") from None
    raise ValueError(f"--grid {key}: a {kind.__name__} field cannot be swept")


def parse_grid(config, specs: list[str]) -> dict[str, tuple]:
    """["optim.lr=3e-4,1e-4", "train.batch_size=8,16"] -> {"optim.lr": (3e-4, 1e-4), …};
    each value parsed to the type of the existing config field."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"--grid {spec!r}: expected key=value1,value2,...")
        kind = _field_type(config, key)
        if key in grid:
            raise ValueError(f"--grid key {key!r} given twice")
        grid[key] = tuple(_parse_value(key, v, kind) for v in values.split(","))
        if len(set(grid[key])) != len(grid[key]):
            raise ValueError(f"--grid {key}: repeated values")
    return grid


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected integers like 1,2,3") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: repeated seeds")
    return seeds


def format_value(value) -> str:
    """Short, deterministic text of a grid value: 3e-4, 5e-5, 0.1, 32, True."""
    if isinstance(value, float) and value != 0 and abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value).replace("/", "_")


def format_point(names: list[str], point: tuple) -> str:
    return ", ".join(f"{n}={format_value(v)}" for n, v in zip(names, point, strict=True))


def short_names(keys) -> dict[str, str]:
    """Each key's last segment ("lr"), or the whole key where two would clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


@dataclasses.dataclass
class Cell:
    """One run: a grid point (values in grid key order) and a seed (None: the config's)."""

    point: tuple
    seed: int | None
    name: str
    config: ml_collections.ConfigDict

    @property
    def run(self) -> Path:
        return runs.workdir_of(self.config)


def make_cells(config, grid: dict, seeds, folder: Path) -> list[Cell]:
    """Every grid point × seed, in grid order; folder names like `lr=3e-4,batch_size=8,seed=1`."""
    if seeds and "train.seed" in grid:
        raise ValueError("give seeds either with --seeds or as --grid train.seed=..., not both")
    names = short_names(list(grid))
    cells = []
    for point in itertools.product(*grid.values()):
        for seed in seeds or (None,):
            parts = [f"{names[k]}={format_value(v)}" for k, v in zip(grid, point, strict=True)]
            if seed is not None:
                parts.append(f"seed={seed}")
            name = ",".join(parts)
            cell_config = copy.deepcopy(config)
            cell_config.update_from_flattened_dict(dict(zip(grid, point, strict=True)))
            if seed is not None:
                cell_config.train.seed = seed
            cell_config.name = f"{config.name} {name}"
            cell_config.workdir = str(Path(folder) / name)
            cells.append(Cell(point, seed, name, cell_config))
    return cells


def finished(cell: Cell) -> bool:
    """summary.json present, for this same config (another config there is an error)."""
    if not (cell.run / runs.SUMMARY_FILE).is_file():
        return False
    saved = json.loads((cell.run / runs.CONFIG_FILE).read_text())
    if runs.differences(saved, runs.config_dict(cell.config)):
        raise ValueError(
            f"{cell.run} holds a finished run with a different config; choose another --workdir"
        )
    return True


def run_sweep(
    config,
    grid=None,
    seeds=None,
    workdir=None,
    vectorize: bool = False,
    max_members: int | None = None,
) -> dict:
    """Runs every unfinished cell, then writes the report; returns its summary.

    The sweep folder is `workdir`, else config.workdir, else runs/<config.name>_sweep.

    Finished cells (summary.json) are skipped and a half-finished one resumes from its
    checkpoints/last. With `vectorize`, cells that differ only in optim.lr and train.seed
    train together (training.train_runs, at most `max_members` per call of the step); a group
    with an unfinished member resumes from the members' last checkpoints when they agree,
    else restarts.
    """
    grid = dict(grid or DEFAULT_GRID)
    folder = Path(workdir or config.workdir or Path("runs") / f"{config.name}_sweep")
    cells = make_cells(config, grid, seeds, folder)
    if vectorize:
        for cell in cells:
            training.check_vectorizable(cell.config)
    todo = [c for c in cells if not finished(c)]
    log.info("sweep %s: %d runs, %d to do", folder, len(cells), len(todo))
    groups = {}
    for cell in todo:  # one group per cell, or per group_key with --vectorize
        key = training.group_key(cell.config) if vectorize else cell.name
        groups.setdefault(key, []).append(cell)
    failed, interrupted = {}, None
    for members in groups.values():
        results = training.train_runs([c.config for c in members], max_members=max_members)
        for cell, result in zip(members, results, strict=True):
            if "diverged_at" in result:
                failed[cell.name] = "diverged"
            interrupted = interrupted or result.get("exit_status")
        if interrupted:
            break
    folder.mkdir(parents=True, exist_ok=True)
    summary = write_report(folder, config, grid, seeds, cells, failed)
    summary["interrupted"] = interrupted
    return summary


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def _fmt(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def collect(cells: list[Cell], metric: str, failed: dict | None = None) -> list[dict]:
    """One row per run: status, validation metric and the summary it came from."""
    rows = []
    for cell in cells:
        file = cell.run / runs.SUMMARY_FILE
        summary = json.loads(file.read_text()) if file.is_file() else None
        status = "done" if summary else (failed or {}).get(cell.name, "not finished")
        value = summary["validation"].get(metric) if summary else None
        rows.append(dict(cell=cell, status=status, validation=value, summary=summary))
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per grid point (in grid order): mean ± sample std over its finished seeds."""
    points = {}
    for row in rows:
        points.setdefault(row["cell"].point, []).append(row)
    out = []
    for point, members in points.items():
        done = [r for r in members if r["status"] == "done" and r["validation"] is not None]
        mean, std = _mean_std([r["validation"] for r in done])
        out.append(dict(point=point, runs=members, done=done, mean=mean, std=std))
    return out


def best_point(points: list[dict]) -> dict | None:
    """The grid point with the highest mean validation metric (first in grid order on ties)."""
    scored = [p for p in points if p["mean"] is not None]
    return max(scored, key=lambda p: p["mean"]) if scored else None


def write_report(folder: Path, config, grid: dict, seeds, cells: list[Cell], failed=None) -> dict:
    """sweep.md, sweep.csv and heatmap.png in folder; returns the winner's numbers."""
    metric = config.train.select_metric
    rows = collect(cells, metric, failed)
    points = aggregate(rows)
    winner = best_point(points)
    names = short_names(list(grid))
    keys = [names[k] for k in grid]

    with open(folder / CSV_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        from_summary = ("best_step", "trainable_params", "wall_time_s")
        writer.writerow(
            ["cell", *keys, "seed", "status", f"validation_{metric}", *from_summary, "winner"]
        )
        for row in rows:
            cell, summary = row["cell"], row["summary"] or {}
            value = "" if row["validation"] is None else row["validation"]
            is_winner = winner is not None and cell.point == winner["point"]
            writer.writerow(
                [cell.name, *cell.point, cell.config.train.seed, row["status"], value]
                + [summary.get(field, "") for field in from_summary]
                + [is_winner]
            )

    n_seeds = len(seeds) if seeds else 1
    spread = f", mean ± sample std over {n_seeds} seeds" if n_seeds > 1 else ""
    lines = [
        f"# Sweep: {config.name}",
        "",
        f"{len(cells)} runs in `{folder}`, one folder per cell; each run's validation {metric} "
        f"is that of its best checkpoint{spread}. Grid: "
        + "; ".join(f"{k} = {', '.join(format_value(v) for v in vs)}" for k, vs in grid.items())
        + (f"; seeds {', '.join(map(str, seeds))}" if seeds else "")
        + ".",
        "",
        "| " + " | ".join([*keys, f"validation {metric}", "runs"]) + " |",
        "|" + "---:|" * (len(keys) + 2),
    ]
    for p in points:
        text = _fmt(p["mean"], p["std"])
        if p is winner:
            text = f"**{text}**"
        states = sorted({r["status"] for r in p["runs"]} - {"done"})
        count = f"{len(p['done'])}/{len(p['runs'])}" + (f" ({', '.join(states)})" if states else "")
        lines.append("| " + " | ".join([*map(format_value, p["point"]), text, count]) + " |")
    lines += ["", "## Winner", ""]
    result = dict(report=str(folder / REPORT_FILE), winner=None)
    if winner is None:
        lines.append("No run has finished yet.")
    else:
        first = winner["done"][0]["summary"]
        tests = [r["summary"]["test"] for r in winner["done"]]
        test_values = [t[metric] for t in tests if t and metric in t]
        test_mean, test_std = _mean_std(test_values)
        where = format_point(keys, winner["point"])
        test_text = (
            f"test {metric} {_fmt(test_mean, test_std)} (its best checkpoints)"
            if test_values
            else "no labelled test split"
        )
        lines.append(
            f"{where}: validation {metric} {_fmt(winner['mean'], winner['std'])}; {test_text}; "
            f"trainable parameters {first['trainable_params']:,} of {first['total_params']:,}."
        )
        ties = [
            format_point(keys, p["point"])
            for p in points
            if p is not winner and p["mean"] == winner["mean"]
        ]
        if ties:
            lines += ["", f"Tied with {'; '.join(ties)}: the first in grid order wins."]
        lines += ["", "Runs: " + ", ".join(f"`{r['cell'].name}`" for r in winner["done"])]
        result["winner"] = dict(
            point=dict(zip(grid, winner["point"], strict=True)),
            runs=[str(r["cell"].run) for r in winner["done"]],
            validation=winner["mean"],
            validation_std=winner["std"],
            test=test_mean,
            test_std=test_std,
            trainable_params=first["trainable_params"],
        )
    (folder / REPORT_FILE).write_text("\n".join(lines) + "\n")
    label = f"validation {metric}" + (f", mean over {n_seeds} seeds" if n_seeds > 1 else "")
    plot_heatmap(points, grid, winner, label, folder / HEATMAP_FILE)
    return result


def plot_heatmap(points, grid: dict, winner, label: str, out_png: Path) -> Path:
    """Mean validation metric over the first two grid keys (one row when there is one key);
    with more keys each square shows the best over the others."""
    keys = list(grid)
    rows_key, cols_key = keys[0], keys[1] if len(keys) > 1 else None
    row_values = grid[rows_key]
    col_values = grid[cols_key] if cols_key else (None,)
    values = np.full((len(row_values), len(col_values)), np.nan)
    for p in points:
        if p["mean"] is None:
            continue
        i = row_values.index(p["point"][0])
        j = col_values.index(p["point"][1]) if cols_key else 0
        values[i, j] = p["mean"] if math.isnan(values[i, j]) else max(values[i, j], p["mean"])
    names = short_names(keys)
    fig, ax = plt.subplots(figsize=(1.4 * len(col_values) + 2.5, 0.7 * len(row_values) + 1.8))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_yticks(range(len(row_values)), [format_value(v) for v in row_values])
    ax.set_ylabel(names[rows_key])
    if cols_key:
        ax.set_xticks(range(len(col_values)), [format_value(v) for v in col_values])
        ax.set_xlabel(names[cols_key])
    else:
        ax.set_xticks([])
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (i, j), v in np.ndenumerate(values):
        text = "–" if np.isnan(v) else f"{v:.3f}"
        ax.text(j, i, text, ha="center", va="center", color="black" if v > middle else "white")
    if winner is not None:
        i = row_values.index(winner["point"][0])
        j = col_values.index(winner["point"][1]) if cols_key else 0
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    others = [names[k] for k in keys[2:]]
    title = label.replace(", ", "\n") + (f"\nbest over {', '.join(others)}" if others else "")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
