"""Every way a run can end leaves a true record: signals, SIGKILL, NaN, a full disk, two runs in one folder,
a failing sweep job, resume with other settings, one-sample batches, bad scheduler settings, bad checkpoints.

Real subprocesses of train.py (signals sent once an epoch line is logged), real files, a real size-limited
filesystem (tmpfs, when this machine lets the tests mount one)."""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from app_helpers import TINY, TRAIN, build_step, compose_config, load_dataset, read_metrics, train, train_ok

from sigprop.engine import checks
from sigprop.engine.config import ConfigError
from sigprop.engine.interrupt import Interrupted, StopSignals

ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def checkpoint_epoch(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"])


def start_train(args: list[str], cwd: Path, new_session: bool = False) -> tuple[subprocess.Popen[str], Path]:
    """train.py in the background, its output (stdout and stderr) in a file."""
    out = cwd / f"train-{time.monotonic_ns()}.out"
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *args], cwd=cwd, env=ENV, text=True,
        stdout=open(out, "w"), stderr=subprocess.STDOUT, start_new_session=new_session,
    )
    return proc, out


def wait_for(out: Path, text: str, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    """Wait until ``text`` is in the output (the run logged it)."""
    end = time.monotonic() + timeout
    while text not in out.read_text():
        assert proc.poll() is None, f"train.py ended before logging {text!r}:\n{out.read_text()[-3000:]}"
        assert time.monotonic() < end, f"no {text!r} after {timeout} s"
        time.sleep(0.05)


def wandb_record(run_dir: Path) -> bytes:
    (record,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return record.read_bytes()


SIGNALS = {  # how a scheduler or a user stops a run, and the exit status it expects
    "SIGTERM": (signal.SIGTERM, False, 143, pytest.mark.slow),
    "SIGINT": (signal.SIGINT, False, 130, pytest.mark.slow),
    "SIGTERM to the process group": (signal.SIGTERM, True, 143, pytest.mark.slow),
    "SIGHUP": (signal.SIGHUP, False, 129, pytest.mark.slow),  # the terminal closed
}


@pytest.mark.parametrize("signum,group,code", [pytest.param(*v[:3], marks=v[3], id=k) for k, v in SIGNALS.items()])
def test_signal_closes_the_record_at_the_last_completed_epoch(signum: int, group: bool, code: int, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc, out = start_train([*TINY, "epochs=6", "logger=wandb", f"hydra.run.dir={run_dir}"], tmp_path, new_session=group)
    wait_for(out, "epoch 1/6", proc)
    os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
    assert proc.wait(timeout=120) == code, out.read_text()[-3000:]
    record = summary(run_dir)
    rows = read_metrics(run_dir)
    assert record["status"] == "interrupted" and record["reason"] == f"interrupted by {signal.Signals(signum).name}"
    assert record["last_epoch"] == len(rows) == checkpoint_epoch(run_dir) >= 1  # the epoch in progress is abandoned
    assert not list(run_dir.glob("*.part"))
    # The W&B run is closed with its history: every recorded epoch, and the summary's status.
    wandb_bytes = wandb_record(run_dir)
    assert wandb_bytes.count(b"train/layer01/acc") >= len(rows) and b'"interrupted"' in wandb_bytes
    assert f"interrupted by {signal.Signals(signum).name}" in out.read_text()


def test_stop_signals_are_held_while_an_epoch_is_recorded() -> None:
    """In-process, with real signals: SIGTERM raises Interrupted at once, except inside held(), where it waits
    for the block to end; the previous handler comes back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        with pytest.raises(Interrupted) as err:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs in the main thread at the next bytecode
        assert err.value.exit_code == 143
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while the record is closed: no second Interrupted
        time.sleep(0.05)
    assert pickle.loads(pickle.dumps(err.value)).signum == signal.SIGTERM  # as a launcher's worker sends it back
    steps = []
    with StopSignals() as signals, pytest.raises(Interrupted):
        with signals.held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            steps.append("the record is complete")
    assert steps == ["the record is complete"]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_sigterm_stops_a_sweep_after_closing_the_current_jobs_record(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc, out = start_train(["-m", *TINY, "epochs=4", "seed=0,1,2", "logger=none", f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for(out, "epoch 2/4", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert summary(sweep / "0")["status"] == "interrupted"
    assert not (sweep / "1").exists()  # the next job never started


def signal_when(path: Path, proc: subprocess.Popen[str], out: Path, signum: int, timeout: float = 240) -> None:
    """Send ``signum`` as soon as ``path`` exists (Hydra is starting the run there), polling every few ms."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"train.py ended before {path} appeared:\n{out.read_text()[-3000:]}"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.002)
    proc.send_signal(signum)


EARLY = {  # a signal as Hydra creates the run's folder, as it writes .hydra/ there, or as train.py begins
    "single run, SIGINT": (False, signal.SIGINT, 130, ""),
    "single run, SIGHUP": (False, signal.SIGHUP, 129, ""),
    "single run, SIGTERM while .hydra/ is written": (False, signal.SIGTERM, 143, ".hydra"),
    "basic sweep, SIGINT": (True, signal.SIGINT, 130, ""),
    "basic sweep, SIGTERM": (True, signal.SIGTERM, 143, ""),
    "basic sweep, SIGINT while .hydra/ is written": (True, signal.SIGINT, 130, ".hydra"),
}


@pytest.mark.slow
@pytest.mark.parametrize("sweep,signum,code,when", list(EARLY.values()), ids=list(EARLY))
def test_a_signal_before_training_leaves_the_folder_a_record(sweep: bool, signum: int, code: int, when: str, tmp_path: Path) -> None:
    """A signal that lands before the first epoch, even while Hydra writes the folder: no traceback, the exit
    status of the signal, and the folder that was created says interrupted (a sweep's next job never starts)."""
    base = tmp_path / "runs"
    args = [*TINY, "epochs=50", "logger=none"]
    args += ["-m", "seed=0,1", f"hydra.sweep.dir={base}"] if sweep else [f"hydra.run.dir={base / '0'}"]
    proc, out = start_train(args, tmp_path)
    signal_when(base / "0" / when, proc, out, signum)
    assert proc.wait(timeout=120) == code, out.read_text()[-3000:]
    text = out.read_text()
    assert "Traceback" not in text, text[-3000:]
    record = summary(base / "0")
    assert record["status"] == "interrupted" and record["reason"] == f"interrupted by {signal.Signals(signum).name}"
    assert not (base / "1").exists()


@pytest.mark.slow
def test_sigkill_leaves_every_completed_epoch_on_disk_and_resume_continues(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, "epochs=30", "logger=wandb"]
    proc, out = start_train([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(out, "epoch 2/30", proc)
    time.sleep(1.5)  # wandb writes what it was given to its .wandb file every second (FLUSH_INTERVAL_S)
    proc.kill()
    proc.wait(timeout=60)
    rows = read_metrics(run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert len(rows) >= 2 and state["epoch"] == len(rows) and state["history"] == rows
    assert wandb_record(run_dir).count(b"train/layer01/acc") >= 2  # W&B's own file holds the epochs too
    # A kill during a checkpoint write leaves checkpoint.pt.part: the next start (the resume) removes it.
    (run_dir / "checkpoint.pt.part").write_bytes(b"half a checkpoint")
    epochs = len(rows) + 1  # one more epoch: epochs may change when continuing
    train_ok([*args, f"epochs={epochs}", f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    assert not (run_dir / "checkpoint.pt.part").exists()
    assert [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == list(range(1, epochs + 1))
    assert summary(tmp_path / "resumed")["status"] == "finished"


# The learning rate jumps to 1e6 after epoch 1 (SGD): epoch 1 is finite, epoch 2 diverges.
DIVERGE = ["optimizer=sgd", "optimizer.lr=0.01", "scheduler.milestones=[1]", "scheduler.gamma=1e8"]


@pytest.mark.slow
def test_a_job_that_fails_on_its_data_fails_alone(tmp_path: Path) -> None:
    """A setting only the data can refute (a subset larger than the dataset) fails its job; the sweep goes on
    and exits with status 1, naming the job."""
    sweep = tmp_path / "sweep"
    result = train(["-m", *TINY, "logger=none", "dataset.train_subset=99999,1000", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 jobs did not finish: job 0 (") and "dataset.train_subset=99999" in last
    assert "exceeds the 10000 samples" in last
    assert summary(sweep / "0")["status"] == "failed" and not (sweep / "0" / "metrics.jsonl").exists()
    assert summary(sweep / "1")["status"] == "finished" and len(read_metrics(sweep / "1")) == 1


@pytest.mark.slow
def test_nan_loss_stops_the_job_as_diverged_keeping_the_last_finite_checkpoint(tmp_path: Path) -> None:
    """Job 0 diverges in epoch 2: stopped there with one line naming the first non-finite layer, its
    checkpoint and metrics stay epoch 1's; job 1 (a sane schedule) still runs; the sweep exits with 1."""
    sweep = tmp_path / "sweep"
    result = train(["-m", *TINY, *DIVERGE, "epochs=2", "logger=none", "scheduler.gamma=1e8,0.5", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 1
    assert "diverged in epoch 2: the train loss of signal is nan (the first layer to go non-finite)" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 jobs did not finish: job 0 (") and "diverged: diverged in epoch 2" in last
    diverged = sweep / "0"
    assert summary(diverged)["status"] == "diverged" and summary(diverged)["last_epoch"] == 1
    assert checkpoint_epoch(diverged) == 1 and len(read_metrics(diverged)) == 1
    weights = torch.load(diverged / "checkpoint.pt", weights_only=True)["step"]["model"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert summary(sweep / "1")["status"] == "finished" and len(read_metrics(sweep / "1")) == 2


@pytest.mark.slow
def test_resume_refuses_other_settings_in_one_line_before_writing(tmp_path: Path) -> None:
    first = tmp_path / "first"
    train_ok([*TINY, "logger=none", f"hydra.run.dir={first}"], tmp_path)
    changed = ["optimizer.lr=0.1", "scheduler.milestones=[5]", "dataset=mnist", "optimizer=sgd"]
    resumed = tmp_path / "resumed"
    result = train([*TINY, *changed, "epochs=2", "logger=none", f"resume={first}", f"hydra.run.dir={resumed}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"{' '.join(changed)} would change them" in line, line  # the folder's own overrides (TINY) are not named
    assert not resumed.exists()  # refused before Hydra wrote anything
    # A checkpoint without its run folder's record is checked key by key against the config it stores.
    elsewhere = tmp_path / "elsewhere.pt"
    shutil.copy(first / "checkpoint.pt", elsewhere)
    result = train([*TINY, *changed, "epochs=2", "logger=none", f"resume={elsewhere}", f"hydra.run.dir={resumed}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    for difference in ("optimizer.lr=0.1 (checkpoint: 0.002)", "scheduler.milestones=[5] (checkpoint: [1])",
                       "dataset._target_=sigprop.data.datasets.MNIST (checkpoint: sigprop.data.datasets.Embedded)",
                       "optimizer._target_=torch.optim.SGD (checkpoint: torch.optim.Adam)",
                       "optimizer.momentum=0.9 (checkpoint: (not set))"):
        assert difference in line, line
    assert not resumed.exists()
    # What may change when continuing: epochs, threads, logger.*; the record is what ran.
    train_ok([*TINY, "epochs=2", "threads=1", "logger=none", f"resume={first}", f"hydra.run.dir={resumed}"], tmp_path)
    recorded = compose_config([*TINY, "epochs=2", "threads=1", "logger=none"])
    assert (resumed / ".hydra" / "config.yaml").read_text().count(f"lr: {recorded.optimizer.lr}") == 1
    state = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert state["config"]["resolved"]["optimizer"]["lr"] == 2e-3 and state["config"]["resolved"]["epochs"] == 2


@pytest.mark.slow
def test_one_sample_batches_train_and_evaluate(tmp_path: Path) -> None:
    """Training and test sets of 1 + k * batch size with batch norm (the default MLP): the last sample joins
    the batch before it; batch_size=1 is refused in one line."""
    run_dir = tmp_path / "run"
    sizes = ["dataset.train_subset=1001", "dataset.test_subset=501"]  # TINY: batch_size=50, test_batch_size=500
    train_ok([*TINY, *sizes, "logger=none", f"hydra.run.dir={run_dir}"], tmp_path)
    (row,) = read_metrics(run_dir)
    assert all(math.isfinite(v) for v in row.values()) and row["test/acc"] > 0.2
    result = train([*TINY, "batch_size=1", "logger=none", f"hydra.run.dir={tmp_path / 'one'}"], tmp_path)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: batch_size=1: model=mlp_small normalises with batch statistics")


@pytest.mark.parametrize(
    "override,message",
    [
        ("scheduler.gamma=abc", "scheduler.gamma=abc: must be a positive number"),
        ("scheduler.milestones=abc", "scheduler.milestones=abc: must be a list of epochs"),
        ("scheduler.milestones=[-1]", "scheduler.milestones=[-1]: must be a list of epochs"),
        ("model.num_hidden=0", "model.num_hidden=0: must be a whole number from 1 to 2,147,483,647"),
    ],
)
def test_settings_are_checked_before_anything_runs(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg = compose_config([override])
        checks.check_config(cfg)
        build_step(cfg, _embedded_sample())
    assert str(err.value).startswith(message), str(err.value)


def _embedded_sample():  # noqa: ANN202 - an ImageData of 20 real images
    cfg = compose_config(["dataset.train_subset=20", "dataset.test_subset=20"])
    return load_dataset(cfg)


def test_checkpoint_errors_say_what_is_wrong_with_the_file(tmp_path: Path) -> None:
    torch.save({"format": 3, "step": {"model": {"w": torch.zeros(1000)}}}, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()

    class Hostile:
        def __reduce__(self):  # noqa: ANN204 - what a malicious file would run on loading
            return (os.system, ("echo owned",))

    hostile = tmp_path / "made.pt"
    torch.save({"format": 3, "x": Hostile()}, hostile)  # a checkpoint-shaped file that would run a command
    files = {
        "truncated.pt": (good[: len(good) // 2], "is truncated or corrupt"),
        "random.pt": (random.Random(0).randbytes(4096), "is not a sigprop checkpoint (not a file torch.save wrote)"),
        "pickle.pt": (pickle.dumps({"format": 3}), "is not a sigprop checkpoint (not a file torch.save wrote)"),
        "hostile.pt": (hostile.read_bytes(), "names Python objects beyond tensors and plain values"),
    }
    for name, (data, message) in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError) as err:
            checks.load_checkpoint(str(tmp_path / name))
        text = str(err.value)
        assert text.startswith(f"resume={tmp_path / name}: {tmp_path / name} ") and message in text, text
        assert "weights_only=False" not in text.replace(" ", "") and "does not fit" not in text and "\n" not in text


@pytest.mark.slow
def test_two_runs_into_one_folder_one_wins_the_other_changes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    procs = [start_train([*TINY, "logger=none", f"seed={seed}", f"hydra.run.dir={run_dir}"], tmp_path) for seed in (1, 2)]
    codes = [proc.wait(timeout=300) for proc, _ in procs]
    assert sorted(codes) == [0, 1], [out.read_text()[-2000:] for _, out in procs]
    winner = codes.index(0) + 1
    loser_out = procs[codes.index(1)][1].read_text().strip().splitlines()
    # The loser either meets the winner's claim (both running) or its finished record (winner already done).
    assert loser_out[-1].startswith(
        (f"error: {run_dir} belongs to another run", f"error: {run_dir} already holds a run")
    ), loser_out
    assert f"seed: {winner}\n" in (run_dir / ".hydra" / "config.yaml").read_text()  # the record is the winner's
    assert summary(run_dir)["status"] == "finished"


@pytest.mark.slow
def test_two_sweeps_into_one_folder(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    procs = [
        start_train(["-m", *TINY, "logger=none", f"seed={a},{b}", f"hydra.sweep.dir={sweep}"], tmp_path)
        for a, b in ((1, 2), (3, 4))
    ]
    codes = [proc.wait(timeout=300) for proc, _ in procs]
    assert sorted(codes) == [0, 1]
    winner = ((1, 2), (3, 4))[codes.index(0)]
    for job, seed in zip(("0", "1"), winner, strict=True):
        assert f"seed: {seed}\n" in (sweep / job / ".hydra" / "config.yaml").read_text()
        assert summary(sweep / job)["status"] == "finished"


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small filesystem: mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"a full disk needs a small filesystem; mounting a tmpfs failed: {result.stderr.strip()}")


@pytest.mark.slow
def test_full_disk_stops_with_one_line_keeping_the_last_epoch(tmp_path: Path) -> None:
    """A 6 MB filesystem holds the first checkpoint (3.3 MB) but not the second one beside it."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "6m")
    try:
        run_dir = disk / "run"
        result = train([*TINY, "model.num_hidden=256", "epochs=3", "logger=wandb", f"hydra.run.dir={run_dir}"], tmp_path)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line == f"error: the disk is full (no space left on device); {run_dir} keeps epoch 1 (checkpoint.pt, metrics.jsonl); summary.json says failed"
        assert not list(run_dir.rglob("*.part"))
        assert checkpoint_epoch(run_dir) == 1 and len(read_metrics(run_dir)) == 1
        assert summary(run_dir)["status"] == "failed" and summary(run_dir)["last_epoch"] == 1
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_resumed_run_that_stops_before_its_first_new_epoch_stays_resumable(tmp_path: Path) -> None:
    """SGD whose rate jumps a millionfold after epoch 2 diverges in epoch 3: resumed after epoch 2, the new run
    stops before completing an epoch of its own. Its folder says it keeps epoch 2, and holds it, so it can be
    resumed itself."""
    args = [*TINY, "logger=none", "optimizer=sgd", "scheduler.gamma=1e6", "scheduler.milestones=[2]"]
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    train_ok([*args, "epochs=2", f"hydra.run.dir={first}"], tmp_path)
    result = train([f"resume={first}", "epochs=5", f"hydra.run.dir={resumed}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: diverged in epoch 3") and line.endswith(
        f"{resumed} keeps epoch 2 (checkpoint.pt, metrics.jsonl); summary.json says diverged"
    ), line
    assert summary(resumed)["status"] == "diverged" and summary(resumed)["last_epoch"] == 2
    assert checkpoint_epoch(resumed) == 2 and [row["epoch"] for row in read_metrics(resumed)] == [1, 2]
    again = train([f"resume={resumed}", "epochs=5", f"hydra.run.dir={tmp_path / 'again'}"], tmp_path)
    assert again.returncode == 1 and again.stderr.startswith("error: diverged in epoch 3"), again.stderr


def inodes_used(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_files - stat.f_ffree


@pytest.mark.slow
def test_a_summary_the_full_disk_refused_is_not_claimed(tmp_path: Path) -> None:
    """A filesystem with one file too few for the run (tmpfs's nr_inodes: counted on a first run) fills up at
    the last write, summary.json: the run's line says it could not be written instead of what it would say."""
    args = [*TINY, "logger=none"]
    roomy, tight = tmp_path / "roomy", tmp_path / "tight"
    mount_tmpfs(roomy, "64m")
    try:
        before = inodes_used(roomy)
        train_ok([*args, f"hydra.run.dir={roomy / 'run'}"], tmp_path)
        files = inodes_used(roomy) - before  # the run's folder and everything in it, summary.json last
    finally:
        subprocess.run(["umount", str(roomy)], check=True)
    mount_tmpfs(tight, "64m")
    subprocess.run(["mount", "-o", f"remount,nr_inodes={before + files - 1}", str(tight)], check=True)
    try:
        run_dir = tight / "run"
        result = train([*args, f"hydra.run.dir={run_dir}"], tmp_path)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line == f"error: the disk is full (no space left on device); {run_dir} keeps epoch 1 (checkpoint.pt, metrics.jsonl); summary.json could not be written"
        assert not (run_dir / "summary.json").exists() and checkpoint_epoch(run_dir) == 1
    finally:
        subprocess.run(["umount", str(tight)], check=True)


@pytest.mark.slow
def test_a_record_is_written_only_by_the_run_that_owns_the_folder(tmp_path: Path) -> None:
    """A sweep whose job 0 fails on its data (a subset beyond the dataset) and whose job 1 finishes: neither
    folder can be taken by a later run, through ``hydra.run.dir=`` or ``run_dir=``, and an empty
    ``hydra.run.dir=`` (the current directory) is refused; each in one line, before anything is written."""
    sweep = tmp_path / "sweep"
    train(["-m", *TINY, "logger=none", "dataset.train_subset=99999,1000", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert summary(sweep / "0")["status"] == "failed" and summary(sweep / "1")["status"] == "finished"
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cases = {
        f"hydra.run.dir={sweep / '0'}": f"error: {sweep / '0'} already holds a run (summary.json)",
        f"hydra.run.dir={sweep / '1'}": f"error: {sweep / '1'} already holds a run (metrics.jsonl)",
        f"run_dir={sweep / '0'}": f"error: run_dir={sweep / '0'}: run_dir is the folder Hydra creates for the run",
        "hydra.run.dir=": "error: hydra.run.dir is empty",
    }
    for override, message in cases.items():
        result = train([*TINY, "logger=none", override], cwd)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(message), (override, line)
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
    assert list(cwd.iterdir()) == []  # nothing written where train.py was started (no outputs/ either)
