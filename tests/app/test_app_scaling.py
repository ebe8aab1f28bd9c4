"""Scaling out: sweeps through Hydra's launcher plugins (joblib: parallel jobs on one machine; submitit: SLURM,
or local processes), each job with its own folder, W&B run, thread share and one-line record.

The plugins come with ``pip install -e ".[cluster]"`` (``.ci/run`` installs them); without them these tests skip.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_helpers import TINY, TRAIN, compose_config, read_metrics, train, train_ok, wandb_records, without_timing

from sigprop.engine.parallel import available_cores, job_threads

CLUSTER = 'needs the launcher plugins: pip install -e ".[cluster]"'


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_threads_per_job_share_the_cores() -> None:
    assert job_threads(None, cores=16) is None  # one job at a time: torch's default
    assert job_threads({"n_jobs": 4}, cores=16) == 4
    assert job_threads({"n_jobs": -1}, cores=16) == 1  # joblib: one job per core
    assert job_threads({"n_jobs": -3}, cores=16) == 1  # cores - 2 jobs
    assert job_threads({"n_jobs": 32}, cores=16) == 1
    assert job_threads({"cpus_per_task": 6, "n_jobs": None}, cores=64) == 6  # submitit: the cores SLURM gives


@pytest.mark.slow
def test_joblib_sweep_runs_each_job_in_its_own_process_folder_and_wandb_run(tmp_path: Path) -> None:
    """Two jobs at once in joblib's worker processes: each takes half the cores, writes its own folder and W&B run
    (tagged with the sweep); the job whose setting the data refutes fails alone, and the sweep's last line names it."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=CLUSTER)
    sweep = tmp_path / "sweep"
    result = train(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "logger=wandb",
                    "dataset.train_subset=1000,99999", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: 1 of 2 jobs did not finish: job 1 \(.*dataset.train_subset=99999.*\) failed: .*exceeds", last), last
    assert last.endswith(f"; 1 finished; results in {sweep} (python experiments/compare.py {sweep})"), last
    assert summary(sweep / "0")["status"] == "finished" and len(read_metrics(sweep / "0")) == 1
    assert summary(sweep / "1")["status"] == "failed" and not (sweep / "1" / "metrics.jsonl").exists()
    epoch_lines = [line for line in (result.stdout + result.stderr).splitlines() if "epoch 1/1 " in line]
    assert epoch_lines and all("] - job 0: epoch 1/1 " in line for line in epoch_lines), epoch_lines  # which job it is
    threads = max(available_cores() // 2, 1)
    assert f"on cpu ({threads} thread" in (sweep / "0" / "train.log").read_text()
    (run,) = [r.run for r in wandb_records(sweep / "0") if r.HasField("run")][:1]
    assert any(tag.startswith("sweep=") for tag in run.tags) and run.run_group


# The sweep's processes are found through /proc, which only Linux has.
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds a sweep's processes through /proc (Linux)")


def sweep_processes(main_pid: int) -> list[str]:
    """The command lines of the processes a sweep started in its own session (its workers, their wandb-core),
    other than its main process: those in its process group, and those the sweep's main process marks."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) == main_pid or (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # the main process; one that has ended (a zombie until it is reaped)
            marked = f"SIGPROP_SWEEP_PID={main_pid}".encode() in (entry / "environ").read_bytes().split(b"\0")
            if marked or os.getpgid(int(entry.name)) == main_pid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # ended meanwhile
    return found


def lingering(main_pid: int, grace: float = 10.0) -> list[str]:
    """``sweep_processes`` still alive ``grace`` seconds after the sweep's main process ended: multiprocessing's
    resource tracker reads until its last user has closed the pipe, so it may end a moment after the others."""
    deadline = time.monotonic() + grace
    while (found := sweep_processes(main_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def start_sweep(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], Path]:
    """train.py in the background in a session (process group) of its own, its output in a file."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRAIN.parent), os.environ.get("PYTHONPATH")]))
    env.pop("HYDRA_FULL_ERROR", None)
    out = cwd / "sweep.out"
    proc = subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=cwd, env=env, text=True,
                            stdout=open(out, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out


def wait_for_epoch(run_dirs: list[Path], proc: subprocess.Popen[str], out: Path, timeout: float = 240) -> None:
    """Until every one of ``run_dirs`` logged its first epoch."""
    end = time.monotonic() + timeout
    while not all((d / "train.log").is_file() and "epoch 1/" in (d / "train.log").read_text() for d in run_dirs):
        assert proc.poll() is None, f"the sweep ended before its jobs' first epoch:\n{out.read_text()[-3000:]}"
        assert time.monotonic() < end, f"no first epoch after {timeout} s:\n{out.read_text()[-3000:]}"
        time.sleep(0.05)


JOBLIB_SIGNALS = {  # Ctrl-C (SIGINT to the process group); a scheduler's SIGTERM to the main process alone
    "SIGINT to the process group": (signal.SIGINT, True, 130),
    "SIGTERM to the main process": (signal.SIGTERM, False, 143),
}


@pytest.mark.slow
@LINUX_PROC
@pytest.mark.parametrize("signum,group,code", list(JOBLIB_SIGNALS.values()), ids=list(JOBLIB_SIGNALS))
def test_a_signal_stops_a_joblib_sweep_closing_every_jobs_record(signum: int, group: bool, code: int, tmp_path: Path) -> None:
    """The jobs run in joblib's worker processes: each closes its record as interrupted (summary.json, W&B), the
    main process exits 128 + the signal's number without a traceback, and no worker (or its wandb-core) lives on."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=CLUSTER)
    sweep = tmp_path / "sweep"
    proc, out = start_sweep(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "epochs=200",
                             "logger=wandb", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    try:
        wait_for_epoch([sweep / "0", sweep / "1"], proc, out)
        assert sweep_processes(proc.pid)  # the workers
        os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
        assert proc.wait(timeout=90) == code, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text()
    assert "Traceback" not in text and "leaked" not in text, text[-3000:]  # the workers exited, not killed
    name = signal.Signals(signum).name
    for job in ("0", "1"):
        record = summary(sweep / job)
        assert record["status"] == "interrupted" and record["reason"] == f"interrupted by {name}", record
        assert 1 <= record["last_epoch"] == len(read_metrics(sweep / job)) < 200  # no worker trained on
        records = wandb_records(sweep / job)  # the W&B run was closed, saying so
        assert any(r.HasField("exit") for r in records), f"job {job}'s W&B run has no exit record"
        assert any(r.HasField("summary") and b'"interrupted"' in r.SerializeToString() for r in records)
    end = time.monotonic() + 10  # the processes the sweep started end with it
    while sweep_processes(proc.pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not lingering(proc.pid)


@pytest.mark.slow
@LINUX_PROC
def test_a_joblib_sweep_leaves_no_process_behind(tmp_path: Path) -> None:
    """At a sweep's normal end its workers (an idle one too) and their W&B processes end with it."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=CLUSTER)
    sweep = tmp_path / "sweep"
    proc, out = start_sweep(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", *TINY, "logger=wandb",
                             "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    try:
        assert proc.wait(timeout=240) == 0, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert summary(sweep / "0")["status"] == summary(sweep / "1")["status"] == "finished"
    assert not lingering(proc.pid)


@pytest.mark.slow
def test_submitit_local_sweep_runs_every_job_as_its_own_process(tmp_path: Path) -> None:
    """The SLURM launcher's local twin: the same sweep as processes on this machine, one folder and record each."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=CLUSTER)
    sweep = tmp_path / "sweep"
    train_ok(["-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", *TINY, "logger=none",
              "loss=v9,v15", f"hydra.sweep.dir={sweep}"], tmp_path)
    for job, loss in ((0, "v9"), (1, "v15")):
        assert summary(sweep / str(job))["status"] == "finished" and len(read_metrics(sweep / str(job))) == 1
        assert f"loss={loss}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text().replace("- ", "")
        assert "on cpu (1 thread)" in (sweep / str(job) / "train.log").read_text()


def test_slurm_config_reaches_sbatch(tmp_path: Path) -> None:
    """conf/hydra/launcher/slurm.yaml extends the plugin's submitit_slurm, and the settings users change end up as
    the sbatch options submitit writes (mapped as the launcher and submitit's SlurmExecutor map them)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=CLUSTER)
    import dataclasses

    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    config = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"])
    launcher = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    assert set(launcher) == {f.name for f in dataclasses.fields(SlurmQueueConf)}
    assert launcher["_target_"].endswith("SlurmLauncher")
    # SlurmLauncher.launch: the generic keys (BaseQueueConf) renamed by the executor, the others as they are.
    # (A SlurmExecutor cannot be built without srun on the machine: its conversion is called unbound.)
    base = {f.name for f in dataclasses.fields(BaseQueueConf)} - {"submitit_folder"}
    executor = object.__new__(submitit.SlurmExecutor)
    generic = executor._convert_parameters({k: v for k, v in launcher.items() if k in base and v is not None})
    specific = {k: v for k, v in launcher.items() if k not in base | {"_target_", "submitit_folder", "max_num_timeout"}}
    sbatch = _make_sbatch_string(command="python train.py", folder=tmp_path, **generic, **specific)
    for option in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=240", "--signal=USR2@120"):
        assert f"#SBATCH {option}" in sbatch, sbatch


def test_optuna_search_maximises_the_validation_accuracy(tmp_path: Path) -> None:
    """conf/hydra/sweeper/v15_lr_topk.yaml, two trials: the results file names the best trial's learning rate and
    topk, and its value is that trial's best validation accuracy (never a test accuracy)."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=CLUSTER)
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith("optimizer.lr=")]  # the search's own parameter
    train_ok(["-m", "hydra/sweeper=v15_lr_topk", "hydra.sweeper.n_trials=2", *tiny, "dataset.val_size=200",
              "logger=none", f"hydra.sweep.dir={sweep}"], tmp_path)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    trials = {}
    for job in (0, 1):
        overrides = OmegaConf.load(sweep / str(job) / ".hydra" / "overrides.yaml")
        params = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("optimizer.lr", "loss.topk"))
        record = summary(sweep / str(job))
        assert record["status"] == "finished" and "best/val/acc" in record
        trials[job] = (record["best/val/acc"], record["best/test/acc"], params)
    best = max(trials.values(), key=lambda trial: trial[0])
    assert results.best_value == pytest.approx(best[0])
    assert {k: str(v) for k, v in results.best_params.items()} == best[2] and set(best[2]) == {"optimizer.lr", "loss.topk"}


def test_optuna_search_goes_on_past_a_failed_trial(tmp_path: Path) -> None:
    """A trial whose sampled setting the data does not fit is a failed trial: the search runs its other trials,
    writes optimization_results.yaml from those that finished, and exits with status 1 naming the failed job,
    without a traceback. ``n_trials=0`` is refused in one line before the sweep's folder exists."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=CLUSTER)
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith(("optimizer.lr=", "model.num_hidden="))]
    result = train(["-m", "hydra/sweeper=v15_lr_topk", "hydra.sweeper.n_trials=3", *tiny, "model.num_hidden=choice(32,-1)",
                    "dataset.val_size=200", "logger=none", f"hydra.sweep.dir={sweep}"], tmp_path)
    output = result.stdout + result.stderr
    records = {job: summary(sweep / str(job)) for job in range(3)}
    failed = [job for job, record in records.items() if record["status"] == "failed"]
    finished = [job for job, record in records.items() if record["status"] == "finished"]
    assert failed and finished and len(failed) + len(finished) == 3, records  # sampler seed 0: one of each at least
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert f"did not finish: job {failed[0]} (" in output.strip().splitlines()[-1]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(max(records[job]["best/val/acc"] for job in finished))
    assert results.best_params["model.num_hidden"] == 32

    refused = train(["-m", "hydra/sweeper=v15_lr_topk", "hydra.sweeper.n_trials=0", f"hydra.sweep.dir={tmp_path / 'none'}"], tmp_path)
    lines = (refused.stdout + refused.stderr).strip().splitlines()
    assert refused.returncode == 1 and lines == ["error: hydra.sweeper.n_trials=0: must be a whole number of trials from 1"]
    assert not (tmp_path / "none").exists()


def torchrun(args: list[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=<processes> train.py *args`` from ``cwd`` (gloo on the CPU)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", str(TRAIN), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# SigProp with a per-sample local loss (v1 against one signal row per class) and no batch statistics: a step on
# two halves of a batch, gradients averaged, is the step on the whole batch.
DATA_PARALLEL = [*TINY, "model.norm=none", "loss=v1", "signal.per_class=true", "epochs=2", "scheduler.milestones=[1]",
                 "logger=none", "device=cpu", "threads=1"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fused", "layerwise"])
def test_torchrun_two_processes_train_as_one_process_on_the_whole_batch(tmp_path: Path, mode: str) -> None:
    """Two gloo processes, each on half of every batch: every epoch's metrics (every layer's) equal the single
    process's; rank 0 alone writes the run, into the default timestamped folder both ranks agree on."""
    one = tmp_path / "one"
    train_ok([*DATA_PARALLEL, f"step.mode={mode}", f"hydra.run.dir={one}"], tmp_path)
    result = torchrun([*DATA_PARALLEL, f"step.mode={mode}", "logger=wandb"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (two,) = (tmp_path / "outputs").glob("*/*")  # one folder for both ranks
    assert summary(two)["status"] == "finished" and (two / ".hydra" / "config.yaml").is_file()
    # The start line and the records say how many processes trained the run.
    (start,) = [line for line in result.stdout.splitlines() if "] - start: " in line]
    assert "on cpu (1 thread per process) in 2 processes under torchrun: " in start, start
    assert summary(two)["world_size"] == 2 and summary(one)["world_size"] == 1
    (run,) = [r.run for r in wandb_records(two) if r.HasField("run")][:1]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["world_size"] == {"value": 2} or config["world_size"] == 2, config["world_size"]
    ours, single = without_timing(read_metrics(two)), without_timing(read_metrics(one))
    assert [row.keys() for row in ours] == [row.keys() for row in single] and len(ours) == 2
    for a, b in zip(ours, single):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert "train/layer01/acc" in ours[0]


@pytest.mark.slow
def test_torchrun_refuses_a_batch_size_the_processes_cannot_split(tmp_path: Path) -> None:
    result = torchrun([*TINY, "batch_size=51", "logger=none", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == "error: batch_size=51: must be divisible by the 2 processes torchrun started"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sweep", ["-m", "hydra.mode=MULTIRUN"])
def test_torchrun_refuses_a_sweep(tmp_path: Path, sweep: str) -> None:
    result = torchrun([*TINY, "logger=none", sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == f"error: {sweep}: a sweep cannot run under torchrun; start torchrun once per run (docs/scaling.md)"
    assert not (tmp_path / "sweep").exists()
