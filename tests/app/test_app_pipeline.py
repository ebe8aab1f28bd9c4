"""Layer parallelism (``parallel.stages``, sigprop/engine/pipeline.py): the model split into stages, one per
torchrun process (gloo on the CPU), trains exactly as ``step.mode=layerwise`` in one process; settings a pipeline
cannot run are refused in one line before the run's folder exists."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
import torch
from app_helpers import TINY, TRAIN, build_step, compose_config, load_dataset, read_metrics, train, train_ok, without_timing

from sigprop import models
from sigprop.engine.config import ConfigError
from sigprop.engine.pipeline import split_bounds


def torchrun(args: list[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=<processes> train.py *args`` from ``cwd`` (gloo on the CPU)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", str(TRAIN), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_run(ours: Path, single: Path) -> None:
    """Every epoch's metrics (every layer's local loss and accuracy, training and test) and every tensor of the
    checkpoint (weights, buffers, every optimizer's state) of ``ours`` equal ``single``'s.

    The runs compute in float32 (the app has no float64 setting); the comparison allows 1e-6 relative, though the
    same operations on the same inputs in the same order give the same bits on one machine (they do here)."""
    a, b = without_timing(read_metrics(ours)), without_timing(read_metrics(single))
    assert [row.keys() for row in a] == [row.keys() for row in b] and len(a) == len(b) >= 1
    assert any(key.startswith("train/layer") for key in a[0]) and "train/signal/loss" in a[0]
    for row, expected in zip(a, b):
        assert row == pytest.approx(expected, rel=1e-6, abs=1e-9)
    state, expected_state = (torch.load(d / "checkpoint.pt", weights_only=False)["step"] for d in (ours, single))
    assert state["model"].keys() == expected_state["model"].keys()
    for key, tensor in expected_state["model"].items():
        torch.testing.assert_close(state["model"][key], tensor, rtol=1e-6, atol=1e-9, msg=key)
    assert len(state["optimizers"]) == len(expected_state["optimizers"])
    for mine, theirs in zip(state["optimizers"], expected_state["optimizers"]):
        assert mine["state"].keys() == theirs["state"].keys()
        for index, values in theirs["state"].items():
            for name, value in values.items():
                torch.testing.assert_close(mine["state"][index][name], value, rtol=1e-6, atol=1e-9)
        assert mine["param_groups"] == theirs["param_groups"]
    assert state["schedulers"] == expected_state["schedulers"]


# Three hidden layers (the first inside the signal) with batch statistics (buffers travel with the weights), two epochs across a milestone.
PIPELINE = [*TINY, "model.num_layers=3", "epochs=2", "scheduler.milestones=[1]", "logger=none", "device=cpu",
            "threads=1", "step.mode=layerwise"]
SIGNALS = {
    "per_class": ["loss=v1", "signal.per_class=true"],  # one signal row per class
    "per_sample": ["loss=v9"],  # one signal row per sample (the reference package's form)
}


@pytest.mark.slow
def test_two_stages_train_exactly_as_one_process_layerwise(tmp_path: Path) -> None:
    """Two gloo processes, one stage each, one signal row per sample (the signal of every class row is in the three
    tests below), split by the layers' measured times (the default, ``parallel.split=auto``, whose timed steps leave
    no trace in the run): every epoch's per-layer metrics (training and evaluation) and the checkpoint rank 0 writes
    (gathered from both stages, in the single-process format) equal the single process's ``step.mode=layerwise``
    run; that checkpoint resumes in one process to the single process's next epoch, and the single process's
    checkpoint resumes in the pipeline to the same epoch."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*PIPELINE, *SIGNALS["per_sample"]]
    train_ok([*args, f"hydra.run.dir={one}"], tmp_path)
    result = torchrun([*args, "parallel.stages=2", f"hydra.run.dir={two}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (start,) = [line for line in result.stdout.splitlines() if "] - start: " in line]
    assert "in 2 pipeline stages under torchrun: " in start, start
    assert summary(two)["status"] == "finished" and summary(two)["world_size"] == 2
    assert not list(tmp_path.glob("outputs"))  # rank 1 wrote no folder of its own
    assert_same_run(two, one)
    log = (two / "train.log").read_text()
    (split,) = re.findall(r"pipeline split by measured time per batch \(ms\): signal [\d.]+, layer01 [\d.]+, "
                          r"layer02 [\d.]+, output [\d.]+; parallel.split=\[(\d)\], stages [\d.]+, [\d.]+ ms: at most "
                          r"[\d.]+x one process's speed", log)
    stage_one = {"1": "layer02, output", "2": "output"}[split]  # the layers after the signal: layer01, layer02, output
    assert f"; stage 1: {stage_one}\n" in log  # the stages hold the layers the measured split names

    # The pipelined run's checkpoint continues in one process (its own settings but parallel.stages) exactly as
    # the single process's own does.
    resumed, longer = tmp_path / "resumed", tmp_path / "longer"
    train_ok([*args, "epochs=3", f"resume={two}", "parallel.stages=1", f"hydra.run.dir={resumed}"], tmp_path)
    train_ok([*args, "epochs=3", f"resume={one}", f"hydra.run.dir={longer}"], tmp_path)
    assert_same_run(resumed, longer)
    # And the single process's checkpoint continues in a pipeline.
    piped = tmp_path / "piped"
    result = torchrun([*args, "epochs=3", f"resume={one}", "parallel.stages=2", f"hydra.run.dir={piped}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(piped, longer)


@pytest.mark.slow
def test_three_stages_on_two_cores_train_exactly_as_one_process_lowmem(tmp_path: Path) -> None:
    """Three stages (more processes than cores: correctness, not speed), the split given explicitly: the signal
    (with the stem) and layer01, layer02, the output layer."""
    one, three = tmp_path / "one", tmp_path / "three"
    # step.mode=lowmem without batch statistics: every layer takes the recomputing update (Loss.forward_recomputing).
    args = [*PIPELINE, *SIGNALS["per_class"], "epochs=1", "step.mode=lowmem", "model.norm=none"]
    train_ok([*args, f"hydra.run.dir={one}"], tmp_path)
    result = torchrun([*args, "parallel.stages=3", "parallel.split=[1,2]", f"hydra.run.dir={three}"], tmp_path, processes=3)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipeline: stage 0: signal, layer01; stage 1: layer02; stage 2: output" in (three / "train.log").read_text()
    assert_same_run(three, one)


@pytest.mark.slow
def test_two_stages_of_two_replicas_train_as_one_process(tmp_path: Path) -> None:
    """Four gloo processes, 2 stages × 2 replicas: each stage's replicas take halves of every batch and average
    only that stage's gradients. With a per-sample local loss against one signal row per class and no batch
    statistics the step equals one process's on the whole batch (as data parallelism: to float precision, the
    halves' sums are added in another order)."""
    one, four = tmp_path / "one", tmp_path / "four"
    args = [*PIPELINE, *SIGNALS["per_class"], "model.norm=none"]
    train_ok([*args, f"hydra.run.dir={one}"], tmp_path)
    result = torchrun([*args, "parallel.stages=2", f"hydra.run.dir={four}"], tmp_path, processes=4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(four)["world_size"] == 4
    assert "in 2 pipeline stages × 2 replicas under torchrun: " in result.stdout
    ours, single = without_timing(read_metrics(four)), without_timing(read_metrics(one))
    assert [row.keys() for row in ours] == [row.keys() for row in single] and len(ours) == 2
    for a, b in zip(ours, single):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    state, expected = (torch.load(d / "checkpoint.pt", weights_only=False)["step"]["model"] for d in (four, one))
    for key, tensor in expected.items():
        torch.testing.assert_close(state[key], tensor, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_a_vgg_in_two_stages_trains_exactly_as_one_process(tmp_path: Path) -> None:
    """VGG-6 at an eighth of its width (convolutions, batch statistics, pooling layers without parameters, which
    stay with the layer before them), split into equal numbers of layers with parameters (``parallel.split=null``)."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*TINY, "dataset.train_subset=300", "dataset.test_subset=200", "test_batch_size=200", "model=vgg6",
            "model.feat_mult=0.125", "logger=none", "device=cpu", "threads=1", "step.mode=layerwise", *SIGNALS["per_class"]]
    train_ok([*args, f"hydra.run.dir={one}"], tmp_path)
    result = torchrun([*args, "parallel.stages=2", "parallel.split=null", f"hydra.run.dir={two}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("pipeline: stage 0: signal, layer01, layer02, MaxPool2d, layer03, MaxPool2d; "
            "stage 1: layer04, MaxPool2d, Flatten, layer05, output") in (two / "train.log").read_text()
    assert_same_run(two, one)
    times = re.findall(r"pipeline time: stage 0 busy ([\d.]+) s, waiting [\d.]+ s; stage 1 busy ([\d.]+) s, waiting "
                       r"[\d.]+ s; this split allows at most ([\d.]+)x", (two / "train.log").read_text())
    assert len(times) == 1, "one line per training phase, from rank 0"  # one epoch
    busy0, busy1, ceiling = map(float, times[0])
    assert busy0 > 0 and busy1 > 0 and 1.0 <= ceiling <= 2.0


def test_stage_times_give_the_speed_up_a_split_allows() -> None:
    """Busy time is a stage's time less its waiting; the split allows the stages' busy time over the busiest's
    (a stage's first replica stands for it)."""
    from sigprop.engine.pipeline import stage_times

    line = stage_times([10.0, 10.0], [1.0, 4.0])
    assert line == ("pipeline time: stage 0 busy 9.0 s, waiting 1.0 s; stage 1 busy 6.0 s, waiting 4.0 s; "
                    "this split allows at most 1.67x one process's speed")
    assert stage_times([10.0, 10.0, 10.0, 10.0], [1.0, 2.0, 4.0, 0.0], replicas=2) == line


def test_balanced_split_makes_the_busiest_stage_least_busy() -> None:
    """The measured split (``parallel.split=auto``): contiguous runs of layers, the signal's time on stage 0, the
    busiest stage as little busy as any split allows (checked against every split), the earliest of equal ones."""
    import itertools

    from sigprop.engine.pipeline import balanced_bounds

    assert balanced_bounds(0.0, [1.0, 1.0, 1.0, 1.0], 2) == [0, 2, 4]
    assert balanced_bounds(2.0, [1.0, 1.0, 1.0, 1.0], 2) == [0, 1, 4]  # the signal weighs on stage 0
    assert balanced_bounds(0.0, [5.0, 1.0, 1.0, 1.0], 2) == [0, 1, 4]
    assert balanced_bounds(0.0, [1.0, 0.0, 1.0], 2) == [0, 1, 3]  # equal splits: the earliest
    assert balanced_bounds(1.0, [3.0], 1) == [0, 1]
    costs = [0.7, 2.1, 0.1, 0.0, 1.3, 0.4, 2.2, 0.05]
    for stages in (2, 3, 4):
        bounds = balanced_bounds(0.5, costs, stages)
        assert bounds[0] == 0 and bounds[-1] == len(costs) and all(a < b for a, b in zip(bounds, bounds[1:]))

        def busiest(b: list[int]) -> float:
            return max(sum(costs[i:j]) + (0.5 if i == 0 else 0.0) for i, j in zip(b, b[1:]))

        best = min(busiest([0, *cut, len(costs)]) for cut in itertools.combinations(range(1, len(costs)), stages - 1))
        assert busiest(bounds) == pytest.approx(best, rel=1e-12)
    with pytest.raises(ValueError, match="cannot split 2 layers into 3 stages"):
        balanced_bounds(0.0, [1.0, 1.0], 3)


def test_timing_the_layers_leaves_the_run_as_it_was() -> None:
    """``layer_times`` trains a few steps to time them, then restores the weights, buffers (batch statistics) and
    optimizer states (Adam's moments): training after it equals training without it, bit for bit; every layer
    and the signal get a positive time."""
    from sigprop.engine.pipeline import layer_times, random_state_kept, units

    cfg = compose_config([*PIPELINE, "loss=v9"])
    data = load_dataset(cfg)
    x = (data.train_images[:32].float() / 255 - 0.5) / 0.5
    y = data.train_labels[:32].long()
    torch.manual_seed(0)
    timed, plain = build_step(cfg, data), build_step(cfg, data)
    plain.load_state_dict(timed.state_dict())
    generator, draws = torch.Generator().manual_seed(1), torch.get_rng_state()
    with random_state_kept(generator):
        signal, costs = layer_times(timed, x, y)
        torch.rand(3, generator=generator), torch.rand(3)
    assert signal > 0 and len(costs) == len(units(timed.model)) and all(c > 0 for c in costs)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.get_rng_state(), draws)
    for step in (timed, plain):
        step.train(True)
        step.train_step(x, y)
    for (key, a), b in zip(timed.state_dict()["model"].items(), plain.state_dict()["model"].values()):
        assert torch.equal(a, b), key
    for a, b in zip(timed.optimizers, plain.optimizers):
        assert len(a.state) == len(b.state) > 0
        for p_a, p_b in zip(a.state.values(), b.state.values()):
            for name in p_b:
                assert torch.equal(torch.as_tensor(p_a[name]), torch.as_tensor(p_b[name])), name


def test_default_split_gives_each_stage_equal_layers_with_parameters() -> None:
    """MLP of conf/model/mlp.yaml with num_layers=3: the learned signal (which takes the network's stem as its
    input module), two more hidden layers and the output layer, 4 learning parts: two stages take two each; an
    explicit split is taken as it is; more stages than learning parts, a split past the output layer, a model that
    is not a plain sequence of layers (LoopBack) and a network trained end to end are refused in one line."""
    cfg = compose_config([*PIPELINE, "loss=v1", "signal.per_class=true"])
    step = build_step(cfg, load_dataset(cfg))
    layers = list(step.model.model)
    learning = [i for i, layer in enumerate(layers) if any(True for _ in layer.parameters())]
    assert len(learning) == 3 and learning[-1] == len(layers) - 1  # 2 hidden layers and the output layer
    assert split_bounds(step.model, 2, None) == [0, learning[1], len(layers)]  # signal, layer01 | layer02, output
    assert split_bounds(step.model, 4, None) == [0, *learning, len(layers)]
    assert split_bounds(step.model, 2, [1]) == [0, 1, len(layers)]
    with pytest.raises(ConfigError, match=r"^parallel.stages=5: more stages than the 4 layers with parameters \(the signal and 3 layers"):
        split_bounds(step.model, 5, None)
    with pytest.raises(ConfigError, match=rf"^parallel.split=\[{len(layers)}\]: the model has {len(layers)} layers"):
        split_bounds(step.model, 2, [len(layers)])
    loop_back = models.LoopBack(step.model.model, step.model.signal, error=lambda *args: args[0])
    with pytest.raises(ConfigError, match="^parallel.stages: the model is a LoopBack, not a plain sequence of layers"):
        split_bounds(loop_back, 2, None)
    backprop = compose_config([*PIPELINE, "propagator=backprop"])
    with pytest.raises(ConfigError, match="^parallel.stages: propagator=backprop trains the hidden layers through one backward"):
        split_bounds(build_step(backprop, load_dataset(backprop)).model, 2, None)


def test_stages_without_torchrun_are_refused_before_the_run_folder(tmp_path: Path) -> None:
    """Alone or as a sweep (``-m``: every job is checked before the first starts), one line, no folder."""
    line = ("error: parallel.stages=2: needs one process per stage started by torchrun "
            "(torchrun --standalone --nproc_per_node=2 train.py parallel.stages=2 ...; docs/scaling.md)")
    for extra, tail in (([], ""), (["-m"], " (in the sweep's job ")):
        result = train([*extra, *PIPELINE, "parallel.stages=2", f"hydra.run.dir={tmp_path / 'run'}",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(line + tail), result.stderr[-2000:]
        assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


# What each torchrun process sees: its rank and the world's size (parallel.torchrun_world reads these).
def torchrun_env(monkeypatch: pytest.MonkeyPatch, processes: int, rank: int = 0) -> None:
    for name, value in (("WORLD_SIZE", processes), ("RANK", rank), ("LOCAL_RANK", rank)):
        monkeypatch.setenv(name, str(value))


@pytest.mark.parametrize(
    ("processes", "args", "line"),
    [
        (2, ["parallel.stages=3"], "parallel.stages=3: torchrun started 2 processes, which the stages do not divide; "
                                   "start stages × replicas processes (--nproc_per_node=3, 6, ...)"),
        (4, ["parallel.stages=2", "batch_size=51"],
         "batch_size=51: must be divisible by the 2 replicas of each stage (4 processes for 2 stages)"),
        (2, ["parallel.stages=2", "step.mode=fused"],
         "step.mode=fused: parallel.stages=2 needs step.mode=layerwise or lowmem (each stage steps its own layers' "
         "optimizers; fused applies every layer's loss in one step over the whole model)"),
        (3, ["parallel.stages=3", "parallel.split=[2,1]"],
         "parallel.split=[2,1]: must list 2 increasing layer indices, where stages 1 to 2 start (or auto: by the "
         "layers' measured times; null: equal numbers of layers with parameters)"),
    ],
)
def test_settings_a_pipeline_cannot_run_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, processes: int, args: list[str], line: str
) -> None:
    """In every torchrun process, from the settings alone (before any data, model or folder); the settings that
    pass give each process its stage's rank."""
    from sigprop.engine.pipeline import check_stages

    torchrun_env(monkeypatch, processes)
    with pytest.raises(ConfigError) as err:
        check_stages(compose_config([*PIPELINE, *args]))
    assert str(err.value) == line
    torchrun_env(monkeypatch, 4, rank=3)
    pipeline = check_stages(compose_config([*PIPELINE, "parallel.stages=2"]))
    assert pipeline is not None and (pipeline.stage_index, pipeline.replica) == (1, 1)


@pytest.mark.slow
def test_torchrun_refuses_a_model_the_stages_cannot_split(tmp_path: Path) -> None:
    """End to end, a model that cannot be split so: refused once built, before the first step, in one line (the
    first of torchrun's output); the folder holds only the failed record, as for any network that does not fit.
    Settings alone are refused before the folder exists (the test above; train.py checks them first)."""
    run = tmp_path / "run"
    # The signal (with the stem) and the output layer: two layers with parameters for three stages.
    result = torchrun([*PIPELINE, "parallel.stages=3", "model.num_layers=1", f"hydra.run.dir={run}"], tmp_path, 3)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == "error: parallel.stages=3: more stages than the 2 layers with " \
        "parameters (the signal and 1 layers of the network)", result.stderr[-2000:]
    assert summary(run)["status"] == "failed" and not (run / "metrics.jsonl").exists()


def test_parallel_settings_are_checked_and_do_not_change_results() -> None:
    """``parallel.*`` is typed and ranged like every setting, and neutral: a pipelined run has the single process's
    name, W&B group and comparison label, and a resume may change it (a pipelined run continues in one process)."""
    from hydra.errors import HydraException

    from sigprop.engine.config import changes_results, check_settings, resumable
    from sigprop.utils import one_line

    for override in ("parallel.stages=0", "parallel.split=[-1]", "parallel.split=[]", "parallel.split=even"):
        with pytest.raises(ConfigError, match=f"^{override.split('=')[0]}="):
            check_settings(compose_config([override]))
    with pytest.raises(ConfigError) as err:
        check_settings(compose_config(["parallel.split=even"]))
    assert str(err.value) == "parallel.split=even: must be auto, or a list of whole numbers from 0 to 2,147,483,647 or null"
    for accepted in ("parallel.split=auto", "parallel.split=null", "parallel.split=[1]"):
        check_settings(compose_config([accepted]))
    with pytest.raises(HydraException) as err:
        compose_config(["parallel.stages=two"])
    assert one_line(err.value).startswith("parallel.stages=two: ")
    assert not changes_results("parallel.stages=2") and not changes_results("parallel.split=[1]")
    assert resumable("parallel.stages") and resumable("parallel.split")
    assert compose_config(["parallel.stages=2", "epochs=3"]).hydra.job.override_dirname == "epochs=3"


def rank_pid(parent: int, rank: int) -> int | None:
    """The process id of torchrun's worker ``rank`` (a child of ``parent`` with ``RANK=<rank>`` in its environment)."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return int(child)
    return None


def start_long_run(run: Path, cwd: Path, *torchrun_options: str, settings: Sequence[str] = ()) -> subprocess.Popen[str]:
    """A pipelined run of many epochs under torchrun (``settings``: more of train.py's), once its first epoch is
    recorded."""
    import time

    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *torchrun_options,
               str(TRAIN), *PIPELINE, "epochs=1000", "parallel.stages=2", f"hydra.run.dir={run}", *settings]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240  # a bound against hanging, not a measurement
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(process.communicate()[1][-3000:])
        time.sleep(0.2)
    return process


def wait_for_record(run: Path, process: subprocess.Popen[str], exit: bool = True, stopped: int | None = None) -> dict:
    """The run's summary.json once it is written and, with ``exit``, torchrun has exited (``process`` killed after,
    in any case, and first the worker ``stopped``: a stopped process takes no SIGTERM from torchrun, and holds
    torchrun's output open)."""
    import signal
    import time

    deadline = time.monotonic() + 240
    try:
        while not (run / "summary.json").is_file():
            assert time.monotonic() < deadline, "the run did not stop"
            time.sleep(0.2)
        if exit:
            process.wait(timeout=120)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGKILL)
        process.kill()
        process.communicate()
    return summary(run)


@pytest.mark.slow
def test_sigterm_to_torchrun_closes_the_record_with_the_last_completed_epoch(tmp_path: Path) -> None:
    import signal

    run = tmp_path / "run"
    process = start_long_run(run, tmp_path)
    process.send_signal(signal.SIGTERM)
    record = wait_for_record(run, process)
    assert record["status"] == "interrupted" and record["last_epoch"] >= 1, record
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == record["last_epoch"] == len(read_metrics(run))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc (Linux)")
def test_a_stage_that_dies_stops_the_others_with_one_line_naming_it(tmp_path: Path) -> None:
    """SIGKILL to stage 1 after an epoch: stage 0 stops at its next message instead of waiting (torchrun's own
    watch is slowed here, so that the stage finds out first), and the run's record says which stage stopped
    answering and keeps the last completed epoch."""
    import signal

    run = tmp_path / "run"
    process = start_long_run(run, tmp_path, "--monitor-interval=10")
    pid = rank_pid(process.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    record = wait_for_record(run, process, exit=False)  # torchrun notices the dead worker later
    assert record["status"] == "failed" and record["last_epoch"] >= 1, record
    assert record["reason"].startswith("stage 1 of the pipeline stopped answering ("), record["reason"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc (Linux)")
def test_a_stage_that_hangs_stops_the_others_within_the_timeout(tmp_path: Path) -> None:
    """SIGSTOP to stage 1 after an epoch (alive, its connections open, answering nothing): stage 0 waits at most
    ``parallel.timeout`` for it, then the run's record says which stage stopped answering and keeps the last
    completed epoch. Without the timeout it would wait for torch's default (30 minutes for gloo), past this test's
    4-minute bound."""
    import signal

    run = tmp_path / "run"
    process = start_long_run(run, tmp_path, "--monitor-interval=10", settings=["parallel.timeout=5"])
    pid = rank_pid(process.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    record = wait_for_record(run, process, exit=False, stopped=pid)
    assert record["status"] == "failed" and record["last_epoch"] >= 1, record
    assert record["reason"].startswith("stage 1 of the pipeline stopped answering ("), record["reason"]
    assert "Timed out" in record["reason"] or "timed out" in record["reason"], record["reason"]
