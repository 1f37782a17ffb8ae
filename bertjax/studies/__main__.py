"""`python -m bertjax.studies run NAME`: one study of bertjax/studies/catalog.py, every sweep.

    python -m bertjax.studies list
    python -m bertjax.studies run mrpc_rank [--only full,bitfit] [--seeds 1,2] \
        [--out runs/results] [--data ../shared/data] [--model FOLDER] [--dry_run]

Runs go to <out>/<study>/<sweep>/<cell>; re-running resumes a stopped run (Ctrl-C saves it)
and skips finished ones. --dry_run prints the sweep.py command each sweep equals.
`python -m bertjax.results --records results/runs` then writes RESULTS.md (make page).
"""

import argparse
import os
import sys
from pathlib import Path

from bertjax import cli
from bertjax.parallel import distributed
from bertjax.studies import catalog, runner
from bertjax.train import checks, teacher, xla_cache


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("list", "run"))
    parser.add_argument("study", nargs="?", choices=list(catalog.BY_NAME))
    parser.add_argument("--only", help="comma-separated sweep folders of the study")
    parser.add_argument("--seeds", help="comma-separated seeds replacing the declared ones")
    parser.add_argument("--out", default=Path("runs/results"), type=Path)
    parser.add_argument("--data", help=f"data root (default {catalog.DATA_ROOT})")
    parser.add_argument("--model", help=f"model folder (default {catalog.MODEL_PACKAGE}'s)")
    parser.add_argument("--dry_run", action="store_true", help="print the sweep.py commands")
    return parser


def _list() -> None:
    for study in catalog.STUDIES:
        folders = ", ".join(s.folder for s in study.sweeps)
        print(f"{study.name}: {study.title}\n    sweeps: {folders}")


def _run(args) -> int:
    study = catalog.BY_NAME[args.study]
    only = tuple(args.only.split(",")) if args.only else None
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    planned = runner.plan(study, args.out, args.data, args.model, only, seeds)
    if args.dry_run:
        model = runner.model_path(args.model or study.model)
        for item in planned:
            print(runner.command_line(study, item, args.data or study.data_root, model))
        return 0
    cli.setup_logging()
    xla_cache.enable()
    # students distilling on the same texts (every seed of a transfer sweep) share the
    # teacher's logits instead of computing them once per run
    os.environ.setdefault(teacher.SHARED_CACHE, str(args.out / "teacher_cache"))
    distributed.maybe_initialize()
    for item in planned:  # every config checked before the first run starts
        checks.check_config(item.config)
    return runner.run(planned)


def main() -> None:
    args = _parser().parse_args()
    if args.action == "list":
        return _list()
    if args.study is None:
        cli.fail(f"run needs a study: {', '.join(catalog.BY_NAME)}")
    try:
        status = _run(args)
    except (ValueError, OSError) as err:
        cli.fail(err)
    sys.exit(status)


if __name__ == "__main__":
    main()
