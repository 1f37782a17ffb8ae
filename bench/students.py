"""Evaluation speed of finished runs side by side: a teacher against its compact students.

    python bench/students.py RUN [RUN ...] [--split test --repeats 3 --markdown f.md]

Each run folder's best checkpoint predicts its `--split` (SST-2 test: 1,821 sentences) through
the path eval.py uses (`inference._logits`: packed rows where the run trained with them, one
jitted eval step); the first pass compiles and is not timed, then the median of --repeats.
Runs are timed one after the other in this process, so run it on an otherwise idle machine.
Prints parameters, examples/s and the speed over the first run's (the teacher's).
"""

import argparse
from pathlib import Path

import common

import peft
from bertjax.train import inference


def examples_per_s(run: Path, split: str, repeats: int) -> tuple[int, float, int]:
    """(parameters, examples/s, examples) of one run's best checkpoint on `split`."""
    config, setup, trainable = inference.load_run(run)
    dataset = setup.splits[split]

    def predict():
        return inference._logits(config, setup, trainable, dataset)

    predict()  # compiles every shape
    return (
        peft.count(setup.params),
        len(dataset) / common.median_time(predict, repeats),
        len(dataset),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", help="append the table, machine and command to this file")
    args = parser.parse_args()
    measured = [(run, *examples_per_s(run, args.split, args.repeats)) for run in args.runs]
    first = measured[0][2]
    rows = [
        [str(run), f"{params:,}", f"{speed:.0f}", f"{speed / first:.2f}x"]
        for run, params, speed, _ in measured
    ]
    text = (
        f"{args.split} split ({measured[0][3]:,} examples), best checkpoints, median of "
        f"{args.repeats} after a compiling pass.\n\n"
        + common.table(["run", "parameters", "examples/s", "speed vs the first"], rows)
    )
    common.report("Evaluation speed: teacher and students", text, None, args.markdown)


if __name__ == "__main__":
    main()
