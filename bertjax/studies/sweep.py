"""Grid sweeps: one run folder per cell (× seed) under a sweep folder, the best cell by its
validation metric, and a report (studies/sweep_report.py): sweep.md, sweep.csv, heatmap.png."""

import copy
import dataclasses
import itertools
import logging
from pathlib import Path

import ml_collections

from bertjax import runs
from bertjax.studies import sweep_report
from bertjax.studies.sweep_report import format_value, short_names
from bertjax.train import groups
from bertjax.train import loop as training

log = logging.getLogger("bertjax")

# The BERT miniatures' published fine-tuning grid (Turc et al., 2019).
DEFAULT_GRID = {"optim.lr": (3e-4, 1e-4, 5e-5, 3e-5), "train.batch_size": (8, 16, 32, 64, 128)}
NOT_SWEPT = groups.NAMING_FIELDS  # a cell's name and folder come from its grid point


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
    if runs.differences(runs.saved_config(cell.run), runs.config_dict(cell.config)):
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

    A cell that cannot run (its config or data refused with a one-line error) is marked
    failed in the report, with the error, and the other cells still run: summary["failed"].

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
            groups.check_vectorizable(cell.config)
    todo = [c for c in cells if not finished(c)]
    log.info("sweep %s: %d runs, %d to do", folder, len(cells), len(todo))
    batches = {}
    for cell in todo:  # one group per cell, or per group_key with --vectorize
        key = groups.group_key(cell.config) if vectorize else cell.name
        batches.setdefault(key, []).append(cell)
    failed, reasons, interrupted = {}, {}, None
    for members in batches.values():
        try:
            results = training.train_runs([c.config for c in members], max_members=max_members)
        except (ValueError, OSError) as err:  # these cells cannot run; the others still do
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.error("sweep %s: %s failed: %s", folder, ", ".join(c.name for c in members), reason)
            failed.update({c.name: "failed" for c in members})
            reasons.update({c.name: reason for c in members})
            continue
        for cell, result in zip(members, results, strict=True):
            if "diverged_at" in result:
                failed[cell.name] = "diverged"
            interrupted = interrupted or result.get("exit_status")
        if interrupted:
            break
    folder.mkdir(parents=True, exist_ok=True)
    summary = sweep_report.write_sweep_report(folder, config, grid, seeds, cells, failed, reasons)
    summary["interrupted"] = interrupted
    summary["failed"] = reasons  # cell name -> the one-line error that stopped it
    return summary
