"""Collates run folders into the tables people publish. Intentionally kept short.

    python report.py runs/sst2_lora_s0 runs/sst2_lora_s1 runs/sst2_full_s0 [--out DIR]
    python report.py sweeps/sst2        # every run folder below (found by its summary.json)

Runs that differ only in train.seed form one row: metrics as mean ± std over seeds (n shown).
Writes report.md, report.csv and curves_<dataset>.png (mean validation metric per epoch,
±std band) next to the input: into the folder when one folder of runs is given, else into the
folder holding the given run folders (runs/ above) — or into --out; prints the markdown and,
on stderr, the files written.
"""

import argparse
import sys

from bertjax import cli
from bertjax.studies import report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run folders or folders holding runs")
    parser.add_argument("--out", help="output folder (default: next to the input, see above)")
    parser.add_argument(
        "--metrics", help="comma-separated metrics for report.md (default: select metrics)"
    )
    args = parser.parse_args()
    metrics = args.metrics.split(",") if args.metrics else None
    try:
        result = report.write_report(args.paths, args.out, metrics)
    except (ValueError, OSError) as err:
        cli.fail(err)
    print(result["markdown"])
    print("wrote " + ", ".join(map(str, result["files"])), file=sys.stderr)


if __name__ == "__main__":
    main()
