"""Two processes × one CPU device (gloo collectives) train, resume and evaluate as one
process × two devices does; a half-set multi-process environment is one error line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bertjax import runs
from bertjax.parallel import distributed
from bertjax.runs import checkpoint
from bertjax.train import stopping

REPO = Path(__file__).resolve().parents[1]
INTERRUPT_AT = 48  # of 64 steps: mid-epoch 2, a log step (where the processes agree to stop)
RUN_FILES = {
    "config.json",
    "labels.json",
    "base.json",
    "metrics.jsonl",
    "summary.json",
    "curves.png",
    "checkpoints",
}
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A task the tiny model learns in two epochs: the label is the last word."""
    folder = tmp_path_factory.mktemp("multihost_data")
    words = ["bad", "good"]

    def rows(start, n):
        return "".join(f"item {i} was {words[i % 2]}\t{i % 2}\n" for i in range(start, start + n))

    (folder / "train.tsv").write_text("sentence\tlabel\n" + rows(0, 512))
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + rows(1000, 32))
    (folder / "test.tsv").write_text("sentence\tlabel\n" + rows(2000, 48))
    return folder


def _command(model: Path, data: Path, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "--config=configs/tiny.py",
        f"--config.model={model}",
        f"--config.data.path={data}",
        f"--config.workdir={workdir}",
        "--config.data.splits.validation=dev",
        "--config.data.max_train_examples=512",
        "--config.train.batch_size=16",
        "--config.train.epochs=2",
        "--config.train.log_every=8",
        "--config.optim.lr=3e-2",
        "--config.optim.warmup_ratio=0.0",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BERTJAX_DIS"))}
    env.pop("XLA_FLAGS", None)
    return dict(env, JAX_PLATFORMS="cpu", **extra)


def _one_process_two_devices(command: list[str]) -> subprocess.CompletedProcess:
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert out.returncode == 0, out.stderr
    return out


def _processes(command: list[str], n: int = 2, status: int = 0, **extra) -> list[tuple[str, str]]:
    """Runs `command` as n processes of one device each; their (stdout, stderr)."""
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=_env(
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=str(n),
                JAX_PROCESS_ID=str(i),
                **extra,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, (_, stderr)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == status, f"process {i}: {stderr}"
        assert f"process {i} of {n}: 1 of {n} devices" in stderr
    return outputs


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _trainable(run: Path) -> list[np.ndarray]:
    tree = checkpoint.restore(run / "checkpoints" / "last")[0]["trainable"]
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _evaluations(run: Path) -> list[tuple]:
    return [
        (r["step"], r["split"], r["loss"], r["metrics"])
        for r in runs.read_metrics(run)
        if r["split"] != "train"
    ]


def _assert_same_run(run: Path, reference: Path, more_files=frozenset()) -> None:
    """Same metrics.jsonl evaluations, summary and trainable parameters (float tolerance);
    one copy of each file (process 0 wrote them alone)."""
    names = [p.name for p in run.iterdir()]
    events = [n for n in names if n.startswith("events.out.tfevents.")]
    assert set(names) - set(events) == RUN_FILES | more_files
    assert 1 <= len(events) <= 2  # TensorBoard: one file per session of process 0
    ours, theirs = _evaluations(run), _evaluations(reference)
    assert [r[:2] for r in ours] == [r[:2] for r in theirs]  # once each, same steps
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a[2], b[2], rtol=1e-5)
        assert a[3].keys() == b[3].keys()
        np.testing.assert_allclose(list(a[3].values()), list(b[3].values()), rtol=1e-5)
    summary = json.loads((run / runs.SUMMARY_FILE).read_text())
    expected = json.loads((reference / runs.SUMMARY_FILE).read_text())
    assert summary["best_step"] == expected["best_step"]
    for split in ("validation", "test"):
        for metric, value in expected[split].items():
            np.testing.assert_allclose(summary[split][metric], value, rtol=1e-5, atol=1e-7)
    for a, b in zip(_trainable(run), _trainable(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert_vocab_dir, data_dir) -> Path:
    """The run as one process over two devices."""
    run = tmp_path_factory.mktemp("one_process") / "run"
    _one_process_two_devices(_command(tiny_bert_vocab_dir, data_dir, run))
    summary = json.loads((run / runs.SUMMARY_FILE).read_text())
    # it learned (chance is 0.5), so the comparisons below compare a real trajectory
    assert summary["validation"]["accuracy"] >= 0.75, summary
    return run


def test_two_processes_train_and_evaluate_as_one_process(
    tmp_path, tiny_bert_vocab_dir, data_dir, reference
):
    run = tmp_path / "run"
    outputs = _processes(_command(tiny_bert_vocab_dir, data_dir, run))
    summaries = [_last_json(stdout) for stdout, _ in outputs]
    assert summaries[0]["validation"] == summaries[1]["validation"]
    _assert_same_run(run, reference)
    # eval.py over two processes: every validation example counted once
    outputs = _processes([sys.executable, "eval.py", f"--ckpt={run}"])
    metrics = [_last_json(stdout) for stdout, _ in outputs]
    metrics[0].pop("loss")
    assert metrics[0] == summaries[0]["validation"]


def test_two_processes_resume_after_an_interrupt(
    tmp_path, tiny_bert_vocab_dir, data_dir, reference
):
    run = tmp_path / "run"
    command = _command(tiny_bert_vocab_dir, data_dir, run)
    # Each process sends itself a real SIGINT after that step: exit status 130 on both.
    outputs = _processes(
        command, status=130, **{stopping.SELF_SIGNAL: f"SIGINT@train:{INTERRUPT_AT}"}
    )
    for _, stderr in outputs:
        assert f"SIGINT at step {INTERRUPT_AT}: saved checkpoints/last" in stderr
    assert json.loads((run / "checkpoints/last/meta.json").read_text())["step"] == INTERRUPT_AT
    assert not (run / runs.SUMMARY_FILE).exists()
    outputs = _processes(command)
    for _, stderr in outputs:
        assert f"resumed {run} from step {INTERRUPT_AT}" in stderr
    _assert_same_run(run, reference)


def test_two_processes_distil_a_compact_student_as_one_process(
    tmp_path, tiny_bert_vocab_dir, data_dir, reference
):
    """Distillation over processes (issue #29): the teacher (the reference run) labels the
    train split through the device mesh, and a 1-layer student trains on its logits as one
    process × two devices does; one cached copy of the logits, written by process 0."""
    distil = [
        f"--config.distill.teacher={reference}",
        "--config.distill.alpha=0.5",
        "--config.model_layers=0,",
    ]
    one = tmp_path / "one"
    _one_process_two_devices(_command(tiny_bert_vocab_dir, data_dir, one) + distil)
    two = tmp_path / "two"
    _processes(_command(tiny_bert_vocab_dir, data_dir, two) + distil)
    _assert_same_run(two, one, more_files={"teacher"})
    cached = sorted(p.name for p in (two / "teacher").iterdir())
    assert len(cached) == 2 and cached[0].endswith(".json") and cached[1].endswith(".npy")
    ours, theirs = (np.load(next((r / "teacher").glob("*.npy"))) for r in (two, one))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1"},
            "JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES and JAX_PROCESS_ID are not",
        ),
        ({"JAX_NUM_PROCESSES": "2"}, "JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID unset"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES unset"),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
            "JAX_PROCESS_ID='2' is not an integer 0..1",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "JAX_NUM_PROCESSES='two' is not an integer >= 1",
        ),
        ({"JAX_COORDINATOR_ADDRESS": "h", "JAX_NUM_PROCESSES": "2"}, "needs a port: host:port"),
    ],
)
def test_a_half_set_environment_is_refused(environ, message):
    with pytest.raises(ValueError, match=message):
        distributed.settings(environ)


def test_environment_settings():
    assert distributed.settings({}) is None
    assert distributed.settings({"BERTJAX_DISTRIBUTED": "1"}) == dict(coordinator_address=None)
    full = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.settings(full) == dict(
        coordinator_address="h:1", num_processes=4, process_id=3
    )


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {distributed.ADDRESS: "127.0.0.1:1234"},
            "error: JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES and JAX_PROCESS_ID are "
            "not; set both on every process (or BERTJAX_DISTRIBUTED=1 where JAX detects the "
            "cluster: SLURM, Open MPI, Cloud TPU, Kubernetes)",
        ),
        (
            {distributed.SWITCH: "1"},
            "error: BERTJAX_DISTRIBUTED=1 but JAX detected no cluster (SLURM, Open MPI, Cloud TPU, "
            "Kubernetes) (coordinator_address should be defined.); set JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process",
        ),
    ],
)
def test_train_cli_error_line(environ, message):
    command = [sys.executable, "train.py", "--config=configs/tiny.py"]
    out = subprocess.run(
        command, cwd=REPO, env=_env(**environ), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == message
