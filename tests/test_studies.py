"""Studies as configs: method presets, dataset configs with an argument, and each committed run
record reproduced by its study's declaration."""

import json
import shutil
from pathlib import Path

import pytest

from bertjax import cli, runs
from bertjax.studies import catalog, presets, report, runner, sweep, sweep_report

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "results" / "runs"
# What a record may differ in: its run name (the old config file's), the checkpoint folder of
# the machine that ran it, and where the run folder was (full_2000x2 moved after it ran).
# Fields added after these records ran, at values that leave the computation as it was:
# data.labels only names the ids (issue #28); model_layers None keeps every layer and
# distill.teacher None turns distillation off (issue #29).
NOT_COMPARED = ("name", "model", "workdir", "data.labels", "model_layers", "distill")


def test_dataset_config_takes_a_method_and_rate():
    config = cli._load_config("configs/mrpc.py:method=lora_q_r4,lr=5e-3")
    assert config.name == "mrpc_lora_q_r4"
    assert (config.peft.method, config.peft.lora.rank, config.peft.lora.alpha) == ("lora", 4, 8.0)
    assert tuple(config.peft.lora.targets) == ("query",)
    assert config.optim.lr == 5e-3
    assert config.train.select_metric == "f1" and config.data.subset == "mrpc"


def test_dataset_config_without_argument_is_full_fine_tuning_at_the_preset_rate():
    config = cli._load_config("configs/sst2.py")
    assert (config.name, config.peft.method, config.optim.lr) == ("sst2", "full", 2e-5)


def test_old_config_names_are_the_dataset_config_with_a_preset():
    old = runs.config_dict(cli._load_config("configs/sst2_adapter.py"))
    new = runs.config_dict(cli._load_config("configs/sst2.py:method=houlsby16"))
    assert runs.differences(old, new, ()) == ["name: 'sst2_adapter' -> 'sst2_houlsby16'"]


@pytest.mark.parametrize(
    "arg, message",
    [
        ("method=lora_q_r3", "not a preset"),
        ("rank=4", "expected method=NAME or lr=RATE"),
        ("lr=fast", "expected a number"),
    ],
)
def test_bad_config_argument_names_what_is_wrong(arg, message):
    with pytest.raises(ValueError, match=message):
        presets.parse_arg(arg, "full")


def _planned():
    for study in catalog.STUDIES:
        yield study, runner.plan(study, Path("runs/results"), model="/minilm", root=REPO)


def test_every_committed_record_is_its_study_declaration():
    """Each results/runs/<study>/<sweep>/<cell>/config.json equals the config the catalog
    builds for that cell (the Makefile's old flag strings ran them)."""
    compared = 0
    for study, planned in _planned():
        for item in planned:
            cells = sweep.make_cells(item.config, item.grid, item.seeds, item.workdir)
            by_name = {cell.name: cell for cell in cells}
            for file in sorted((RECORDS / study.name / item.sweep.folder).glob("*/config.json")):
                cell = by_name[file.parent.name]  # a record outside the grid fails here
                saved = json.loads(file.read_text())
                built = runs.config_dict(cell.config)
                assert runs.differences(saved, built, NOT_COMPARED) == [], file
                compared += 1
    assert compared == len(list(RECORDS.rglob("config.json"))) == 145


def test_study_runs_land_where_the_page_reads_them():
    for study, planned in _planned():
        assert [item.workdir for item in planned] == [
            Path("runs/results") / study.name / s.folder for s in study.sweeps
        ]
        assert len({s.folder for s in study.sweeps}) == len(study.sweeps)


def test_dry_run_command_spells_the_sweep():
    study = catalog.BY_NAME["mrpc_rank"]
    (item,) = runner.plan(study, Path("out"), "data", "/minilm", ("bitfit_pooler",), (1, 2))
    assert runner.command_line(study, item, "data", "/minilm") == (
        "python sweep.py --config configs/mrpc.py:method=bitfit,lr=5e-3 --config.model=/minilm "
        "--config.data.path=data/mrpc --config.train.log_every=10 --config.dtype=float32 "
        "--config.data.splits.validation=dev --config.train.epochs=2 --config.train.eval_every=40 "
        """--config.peft.modules_to_save='("bert/pooler",)' --grid train.batch_size=32 """
        "--seeds 1,2 --vectorize --workdir out/mrpc_rank/bitfit_pooler"
    )


def test_unknown_sweep_is_refused():
    with pytest.raises(ValueError, match="mrpc_rank has no sweep 'lora'"):
        runner.plan(catalog.BY_NAME["mrpc_rank"], Path("out"), model="/m", only=("lora",))


def test_sweep_report_rebuilt_from_records_equals_the_committed_one(tmp_path):
    """imdb/full's sweep.md (a 2 x 2 grid, written by the sweep that ran it) comes out the
    same from the declaration and the records, but for the folder it names."""
    study = catalog.BY_NAME["imdb"]
    shutil.copytree(RECORDS / "imdb" / "full", tmp_path / "imdb" / "full")
    (item,) = runner.plan(study, tmp_path, model="/minilm", only=("full",), root=REPO)
    item.config.name = "imdb_full"  # the config file it ran from
    cells = sweep.make_cells(item.config, item.grid, item.seeds, item.workdir)
    sweep_report.write_sweep_report(item.workdir, item.config, item.grid, item.seeds, cells)
    committed = (RECORDS / "imdb" / "full" / "sweep.md").read_text()
    rebuilt = (item.workdir / "sweep.md").read_text()
    assert rebuilt == committed.replace("`runs/results/imdb/full`", f"`{item.workdir}`")
    assert "| 1e-4 | 16 | **0.8620** | 1/1 |" in rebuilt


def test_markdown_table_aligns_text_left_and_numbers_right():
    table = report.markdown_table(["method", "n", "accuracy"], [["lora", "3", "0.812"]], 1)
    assert table == "| method | n | accuracy |\n|---|---:|---:|\n| lora | 3 | 0.812 |"


# a study's settings sized for the tiny model: 16 SST-2 sentences, 1 epoch
TINY_STUDY = {
    "data.splits.validation": "dev",
    "data.max_length": 8,
    "data.max_train_examples": 16,
    "data.max_eval_examples": 16,
    "train.epochs": 1,
}


def test_run_trains_each_sweep_into_the_study_folder(tmp_path, tiny_bert_vocab_dir, shared_data):
    """A two-seed BitFit sweep over configs/sst2.py on a tiny model: one vmapped group, both
    runs in <out>/<study>/<sweep>/<cell> with the declared fields; a re-run trains nothing."""
    tiny = TINY_STUDY
    bitfit = catalog.Sweep("bitfit", "bitfit", 1e-2, (("train.batch_size", (8,)),), (1, 2))
    study = catalog.Study("tiny_sst2", "t", ("accuracy",), "p", "sst2", "sst2", tiny, (bitfit,))
    out = tmp_path / "out"
    planned = runner.plan(study, out, str(shared_data), str(tiny_bert_vocab_dir), root=REPO)
    assert runner.run(planned) == 0
    for seed in (1, 2):
        run = out / "tiny_sst2" / "bitfit" / f"batch_size=8,seed={seed}"
        saved = json.loads((run / runs.CONFIG_FILE).read_text())
        assert (saved["peft"]["method"], saved["optim"]["lr"], saved["train"]["seed"]) == (
            "bitfit",
            1e-2,
            seed,
        )
        assert saved["data"]["path"] == f"{shared_data}/sst2"
        assert (run / runs.SUMMARY_FILE).is_file()
    assert (out / "tiny_sst2" / "bitfit" / "sweep.md").is_file()
    stamp = (out / "tiny_sst2/bitfit/batch_size=8,seed=1" / runs.SUMMARY_FILE).stat().st_mtime_ns
    assert runner.run(planned) == 0
    assert (
        out / "tiny_sst2/bitfit/batch_size=8,seed=1" / runs.SUMMARY_FILE
    ).stat().st_mtime_ns == stamp


def test_a_student_sweep_distils_from_the_teacher_sweep_declared_before_it(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    """catalog.PLACES: a student sweep's distill.teacher names the run of the study's teacher
    sweep ({study_out}) and its transfer texts a file under the data root ({data_root})."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "sst2").symlink_to(shared_data / "sst2")
    (root / "texts.txt").write_text("a gem of a film\na dull mess\nfine\nbad\n" * 4)
    tiny = TINY_STUDY
    batch = (("train.batch_size", (8,)),)
    soft = {
        "distill.teacher": "{study_out}/teacher/batch_size=8,seed=1",
        "distill.alpha": 0.0,
        "distill.transfer": "{data_root}/texts.txt",
        "model_layers": (0,),
    }
    sweeps = (
        catalog.Sweep("teacher", "full", 1e-3, batch, (1,)),
        catalog.Sweep("student", "full", 1e-3, batch, (1,), soft),
    )
    study = catalog.Study("tiny_distill", "t", ("accuracy",), "p", "sst2", "sst2", tiny, sweeps)
    out = tmp_path / "out"
    planned = runner.plan(study, out, str(root), str(tiny_bert_vocab_dir), root=REPO)
    assert runner.run(planned) == 0
    student = out / "tiny_distill" / "student" / "batch_size=8,seed=1"
    saved = json.loads((student / runs.CONFIG_FILE).read_text())
    assert saved["distill"]["teacher"] == str(out / "tiny_distill/teacher/batch_size=8,seed=1")
    assert saved["distill"]["transfer"] == f"{root}/texts.txt"
    summary = json.loads((student / runs.SUMMARY_FILE).read_text())
    assert summary["train_examples"] == 16  # the transfer file's texts
    assert summary["eval_examples_per_s"] > 0  # the test split's evaluation, timed
