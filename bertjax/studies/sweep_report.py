"""A sweep's report: sweep.md (one row per grid point, the winner), sweep.csv, heatmap.png.

The runs are bertjax.studies.sweep's cells (each with .point, .name, .run, .config); the mean ± std
and its formatting are bertjax.studies.report's, the heatmap is drawn by bertjax.runs.plots.
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

from bertjax import runs as run_files
from bertjax.runs import plots
from bertjax.studies.report import fmt, markdown_table, mean_std

REPORT_FILE, CSV_FILE, HEATMAP_FILE = "sweep.md", "sweep.csv", "heatmap.png"


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


def collect(cells: list, metric: str, failed: dict | None = None) -> list[dict]:
    """One row per run (cells: bertjax.studies.sweep.Cell): status, validation metric, summary."""
    rows = []
    for cell in cells:
        file = cell.run / run_files.SUMMARY_FILE
        summary = json.loads(file.read_text()) if file.is_file() else None
        status = "done" if summary else (failed or {}).get(cell.name, "not finished")
        value = summary["validation"].get(metric) if summary else None
        rows.append(dict(cell=cell, status=status, validation=value, summary=summary))
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per grid point (in grid order): mean ± sample std over its finished seeds
    (nan without a finished run; std nan with one)."""
    points = {}
    for row in rows:
        points.setdefault(row["cell"].point, []).append(row)
    out = []
    for point, members in points.items():
        done = [r for r in members if r["status"] == "done" and r["validation"] is not None]
        mean, std, _ = mean_std([r["validation"] for r in done])
        out.append(dict(point=point, runs=members, done=done, mean=mean, std=std))
    return out


def best_point(points: list[dict]) -> dict | None:
    """The grid point with the highest mean validation metric (first in grid order on ties)."""
    scored = [p for p in points if not math.isnan(p["mean"])]
    return max(scored, key=lambda p: p["mean"]) if scored else None


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _sweep_csv(file: Path, rows: list[dict], keys: list[str], metric: str, winner) -> None:
    with open(file, "w", newline="") as f:
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


def _winner_lines(winner: dict, points: list[dict], keys: list[str], metric: str):
    """(markdown lines, numbers) of the winning grid point."""
    first = winner["done"][0]["summary"]
    tests = [r["summary"]["test"] for r in winner["done"]]
    test_mean, test_std, n_test = mean_std([t[metric] for t in tests if t and metric in t])
    test_text = (
        f"test {metric} {fmt(test_mean, test_std, 4)} (its best checkpoints)"
        if n_test
        else "no labelled test split"
    )
    lines = [
        f"{format_point(keys, winner['point'])}: validation {metric} "
        f"{fmt(winner['mean'], winner['std'], 4)}; {test_text}; "
        f"trainable parameters {first['trainable_params']:,} of {first['total_params']:,}."
    ]
    ties = [
        format_point(keys, p["point"])
        for p in points
        if p is not winner and p["mean"] == winner["mean"]
    ]
    if ties:
        lines += ["", f"Tied with {'; '.join(ties)}: the first in grid order wins."]
    lines += ["", "Runs: " + ", ".join(f"`{r['cell'].name}`" for r in winner["done"])]
    numbers = dict(
        runs=[str(r["cell"].run) for r in winner["done"]],
        validation=winner["mean"],
        validation_std=_none(winner["std"]),
        test=_none(test_mean),
        test_std=_none(test_std),
        trainable_params=first["trainable_params"],
    )
    return lines, numbers


def _point_rows(points: list[dict], winner) -> list[list[str]]:
    """One table row per grid point: its values, mean ± std (the winner's bold), runs done."""
    rows = []
    for p in points:
        text = fmt(p["mean"], p["std"], 4)
        if p is winner:
            text = f"**{text}**"
        states = sorted({r["status"] for r in p["runs"]} - {"done"})
        count = f"{len(p['done'])}/{len(p['runs'])}" + (f" ({', '.join(states)})" if states else "")
        rows.append([*map(format_value, p["point"]), text, count])
    return rows


def write_sweep_report(
    folder: Path, config, grid: dict, seeds, cells: list, failed=None, reasons=None
) -> dict:
    """sweep.md, sweep.csv and heatmap.png in folder; returns {"report", "winner"} with the
    winner's point and numbers (None before any run finished). failed: cell name -> status
    ("diverged", "failed"); reasons: cell name -> the error of a failed one (listed)."""
    metric = config.train.select_metric
    rows = collect(cells, metric, failed)
    points = aggregate(rows)
    winner = best_point(points)
    names = short_names(list(grid))
    keys = [names[k] for k in grid]
    _sweep_csv(folder / CSV_FILE, rows, keys, metric, winner)

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
        markdown_table([*keys, f"validation {metric}", "runs"], _point_rows(points, winner)),
        "",
        "## Winner",
        "",
    ]
    result = dict(report=str(folder / REPORT_FILE), winner=None)
    if winner is None:
        lines.append("No run has finished yet.")
    else:
        more, numbers = _winner_lines(winner, points, keys, metric)
        lines += more
        result["winner"] = dict(point=dict(zip(grid, winner["point"], strict=True)), **numbers)
    if reasons:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in reasons.items()]
    (folder / REPORT_FILE).write_text("\n".join(lines) + "\n")
    label = f"validation {metric}" + (f", mean over {n_seeds} seeds" if n_seeds > 1 else "")
    heatmap(points, grid, winner, label, folder / HEATMAP_FILE)
    return result


def heatmap(points: list[dict], grid: dict, winner, label: str, out_png: Path) -> Path:
    """Mean validation metric over the first two grid keys (one row when there is one key);
    with more keys each square shows the best over the others."""
    keys = list(grid)
    rows_key, cols_key = keys[0], keys[1] if len(keys) > 1 else None
    row_values = grid[rows_key]
    col_values = grid[cols_key] if cols_key else (None,)
    values = np.full((len(row_values), len(col_values)), np.nan)
    for p in points:
        if math.isnan(p["mean"]):
            continue
        i = row_values.index(p["point"][0])
        j = col_values.index(p["point"][1]) if cols_key else 0
        values[i, j] = p["mean"] if math.isnan(values[i, j]) else max(values[i, j], p["mean"])
    names = short_names(keys)
    cell = None
    if winner is not None:
        cell = (
            row_values.index(winner["point"][0]),
            col_values.index(winner["point"][1]) if cols_key else 0,
        )
    others = [names[k] for k in keys[2:]]
    title = label.replace(", ", "\n") + (f"\nbest over {', '.join(others)}" if others else "")
    return plots.plot_heatmap(
        values,
        [format_value(v) for v in row_values],
        [format_value(v) for v in col_values] if cols_key else None,
        (names[rows_key], names[cols_key] if cols_key else None),
        cell,
        title,
        out_png,
    )
