"""Dev accuracy per seed with packed and with bucketed batches, on bench/whole_run.py's work.

    python bench/seeds.py [--method lora --lr 5e-4 --seeds 0,1,2,3,4,5,6,7,8,9 --markdown f.md]

Ours only: `training.train` on the seeded 4,000-sentence SST-2 subset, 1 epoch, batch 32,
max_length 128, dev 872, once per seed with `data.packing` on and once with it off (length
buckets). Prints per seed accuracy, mean ± std, median, and Welch's t-test between the modes:
whether packing changes accuracy beyond what the seed does.
"""

import argparse
import tempfile
from pathlib import Path

import common
import numpy as np
from epoch import make_config, write_subset
from scipy import stats

from bertjax.train import loop as training


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_examples", type=int, default=4000)
    parser.add_argument("--method", default="lora", choices=list(common.METHODS))
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    common.add_output_flags(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    accuracy = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp, "data")
        data_dir.mkdir()
        write_subset(data_dir, args.train_examples, seed=0)
        for packing in (1, 0):
            for seed in seeds:
                run = argparse.Namespace(
                    max_length=128, packing=packing, method=args.method, lr=args.lr, batch=32
                )
                config = make_config(
                    run, common.minilm_path(), data_dir, Path(tmp, f"{packing}_{seed}")
                )
                config.train.seed = seed
                accuracy[packing, seed] = training.train(config)["validation"]["accuracy"]
    rows = []
    for packing, name in ((1, "packed"), (0, "buckets")):
        values = np.array([accuracy[packing, s] for s in seeds])
        rows.append(
            [name, *(f"{v:.3f}" for v in values)]
            + [f"{values.mean():.3f} ± {values.std(ddof=1):.3f}", f"{np.median(values):.3f}"]
        )
    test = stats.ttest_ind(
        [accuracy[1, s] for s in seeds], [accuracy[0, s] for s in seeds], equal_var=False
    )
    headers = ["train.seed", *map(str, seeds), "mean ± std", "median"]
    text = (
        f"SST-2 {args.train_examples} train examples, 1 epoch, method {args.method}, lr "
        f"{args.lr}, batch 32, dev accuracy (872).\n\n{common.table(headers, rows)}\n\n"
        f"Welch's t-test packed vs buckets: t = {test.statistic:.2f}, p = {test.pvalue:.2f}"
    )
    common.report(
        f"Accuracy per seed: packed vs buckets ({args.method})", text, None, args.markdown
    )


if __name__ == "__main__":
    main()
