"""Train a network with Signal Propagation (or, as the baseline, backpropagation) from the configs in conf/.

    python train.py                                    # SigProp on the embedded MNIST subset
    python train.py model=vgg8 dataset=cifar10         # swap any part: one config group each
    python train.py -m signal=projection loss=v9,v15   # a sweep: one job per combination

Read top to bottom:
1. Build (``build``): each part from its config group of conf/, one line each, checked; nothing is written
   until all of it works. ``build_step`` assembles the network (sigprop/nets) with the configured signal
   in front and every hidden layer wrapped in the configured propagator (sigprop/engine/assemble.py).
2. Train epoch by epoch (``main``). ``TrainStep.run_phase`` (sigprop/engine/step.py) runs the batches and
   reads every layer's metrics (``train/layer01/acc``, ...). In a training step the model runs the signal
   and every layer; with ``propagator=loss`` each hidden layer computes its local loss and its update in
   the forward pass (``Learn.forward`` and ``Loss.train_``, sigprop/propagators/learn.py); with
   ``step.mode=fused`` the local losses are applied by the step's one backward. An epoch with a
   non-finite loss stops the run (diverged); otherwise the tracker writes the epoch to metrics.jsonl and
   W&B (sigprop/tracking/) and checkpoint.pt is replaced. SIGTERM, SIGINT or SIGHUP abandons the epoch in
   progress (sigprop/engine/interrupt.py).
3. Finish: summary.json and the W&B run record how the run ended (sigprop/engine/outcome.py: finished,
   interrupted, diverged, failed) and the last completed epoch; one line with the final accuracy, or
   one line that says why the run stopped (exit status 1; 128 + its number for a signal).
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Mapping, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sigprop.data.datasets import ImageData
from sigprop.engine import checkpoint, checks, config, parallel, parts, pipeline, rundir, summary
from sigprop.engine.assemble import assemble
from sigprop.engine.interrupt import Interrupted, StopSignals, check_stop
from sigprop.engine.outcome import Outcome, check_finite, outcome_of
from sigprop.engine.step import TrainStep
from sigprop.tracking import Trackers
from sigprop.tracking.jsonl import METRICS_FILE, SUMMARY_FILE, write_summary
from sigprop.utils import one_line

log = logging.getLogger("train")
CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # conf/config.yaml: the run's config, also read by torchrun_args


def build_step(cfg: DictConfig, data: ImageData, choices: Mapping[str, str]) -> TrainStep:
    """The training step for ``data``: every part from its config group, then the assembled model."""
    network = parts.build_group(cfg, "model", choices, input_shape=data.input_shape, num_classes=data.num_classes)
    signal = parts.build_group(cfg, "signal", choices)  # conf/signal/: the label's signal, made for the network
    propagator = parts.build_group(cfg, "propagator", choices)  # conf/propagator/: what trains each hidden layer
    loss = parts.build_group(cfg, "loss", choices)  # conf/loss/: the hidden layers' local loss
    optimizer = parts.build_group(cfg, "optimizer", choices)  # conf/optimizer/: one per learning layer
    checks.check_optimizer(optimizer, choices)  # one step on a stand-in parameter, as training calls it
    scheduler = parts.build_group(cfg, "scheduler", choices)  # conf/scheduler/: every optimizer's schedule
    described = ", ".join(checks.label(g, choices) for g in ("model", "signal", "loss", "propagator"))
    with checks.blame(f"the network does not fit ({described} on dataset {data.name} {data.input_shape})"):
        assembly = assemble(
            network, signal, propagator, loss, optimizer,
            mode=parts.value(cfg.step.mode), recompute_chunk=cfg.step.recompute_chunk, fuse_ht=cfg.step.fuse_ht,
        )
    with checks.blame("step"):
        return TrainStep(
            assembly, scheduler, precision=parts.value(cfg.step.precision),
            channels_last=cfg.step.channels_last, compile=cfg.step.compile,
        )


def build(cfg: DictConfig, info: rundir.RunInfo) -> parts.Job:
    """Check ``cfg`` and build the run it describes, resuming from ``resume`` if set; writes nothing (but for
    removing the half-written ``*.part`` files a killed run left beside the checkpoint it resumes from).
    Raises ``ConfigError`` for anything that would stop the run."""
    choices = info.choices
    config.check_settings(cfg)
    stages = pipeline.check_stages(cfg)  # one stage of a layer-parallel run (parallel.stages > 1), or None
    data_parallel = stages or checks.check_data_parallel(cfg)  # one of torchrun's processes, or None
    writes = data_parallel is None or data_parallel.writes  # the other ranks share rank 0's folder
    if writes:
        rundir.check_new_run_dir(info.run_dir)
    saved = parts.resumed_state(cfg, writes)
    device = parts.set_up_process(cfg, info.threads, data_parallel)

    dataset = parts.build_group(cfg, "dataset", choices)  # conf/dataset/
    data = parts.load_data(dataset)
    step = build_step(cfg, data, choices)
    bounds = stages.plan(step.model) if stages is not None else None  # refuses a model that cannot be split
    step.model.to(device)
    checks.check_batch_statistics(step, data, cfg.batch_size, cfg.test_batch_size, choices)  # first: it names the setting
    checks.check_forward(step, data, device, choices)
    loaders = parts.make_loaders(cfg, data, device)
    start_epoch, history = parts.restore(saved, cfg, step, loaders.generator)
    tracker = parts.make_tracker(parts.build_group(cfg, "logger", choices), info) if writes else Trackers([])
    if stages is not None:  # every rank built (or restored) the whole model alike; each trains its stage
        staged = stages.stage(step, bounds or stages.measure_split(step, loaders.train, loaders.generator))
        log.info(staged.describe())
        step = staged  # type: ignore[assignment]
    elif data_parallel is not None:
        data_parallel.broadcast_model(step.model)
        data_parallel.attach(step.optimizers)
        loaders = data_parallel.shard_loaders(loaders)
    return parts.Job(
        cfg, config.run_config(cfg), device, data, step, loaders, tracker, info.run_dir, dict(choices),
        start_epoch, history, data_parallel,
    )


def keep_resumed_checkpoint(job: parts.Job) -> None:
    """A resumed run that stops before its first new epoch ends has written no checkpoint of its own: its folder
    gets a copy of the one it started from (the epoch its metrics.jsonl and summary.json end with), so it can be
    resumed like any other. Best effort (e.g. a full disk): ``kept`` says where the epoch is."""
    target = job.run_dir / checkpoint.CHECKPOINT_FILE
    if not job.writes or job.cfg.resume is None or target.exists():
        return
    part = target.with_name(f"{target.name}{rundir.PART_SUFFIX}")
    try:
        shutil.copyfile(config.checkpoint_path(job.cfg.resume), part)
        os.replace(part, target)
    except OSError as err:
        log.warning("could not copy the resumed checkpoint into %s: %s", job.run_dir, one_line(err))
    finally:
        part.unlink(missing_ok=True)


def kept(job: parts.Job, last_epoch: int, status: str) -> str:
    """What the folder of a run that did not finish holds, as it is on disk: the epoch kept and the files that
    hold it, and whether summary.json was written (a full disk may refuse it)."""
    folder = job.run_dir
    files = [name for name in (checkpoint.CHECKPOINT_FILE, METRICS_FILE) if (folder / name).is_file() and (folder / name).stat().st_size]
    if not last_epoch:
        line = f"{folder}: no epoch completed"
    elif checkpoint.CHECKPOINT_FILE in files or not job.writes:
        line = f"{folder} keeps epoch {last_epoch} ({', '.join(files) or 'checkpoint.pt, metrics.jsonl'})"
    elif job.cfg.resume is not None:
        line = f"epoch {last_epoch} is in {config.checkpoint_path(job.cfg.resume)} (resume from there)"
    else:
        line = f"{folder} holds no checkpoint of epoch {last_epoch}"
    if not job.writes:
        return f"{line}; summary.json says {status}"
    recorded, _ = rundir.job_record(folder) if (folder / SUMMARY_FILE).is_file() else (None, "")
    return f"{line}; summary.json says {status}" if recorded == status else f"{line}; summary.json could not be written"


def record_early_stop(run_dir: Path, outcome: Outcome) -> None:
    """``summary.json`` for a run that stopped before training (no epoch completed): every run folder that was
    created ends with its record and the reason. Written only by the process that writes the run's files, and
    never where a record is already (another run's folder that ``build`` refused, or a job started again into
    its own folder by a cluster's scheduler, whose record stays as it is)."""
    world = parallel.torchrun_world()
    if (world is not None and world[0] != 0) or not run_dir.is_dir():
        return
    if any((run_dir / name).exists() for name in (SUMMARY_FILE, METRICS_FILE, checkpoint.CHECKPOINT_FILE)):
        return
    try:
        world_size = world[1] if world is not None else 1
        write_summary(run_dir, {"last_epoch": 0, "world_size": world_size, "reason": outcome.reason}, outcome.status)
    except OSError as err:  # e.g. a full disk: the run's own line still says why it stopped
        log.error("%s could not be written: %s", run_dir / SUMMARY_FILE, one_line(err))


def note_in_log(line: str) -> None:
    """``line`` as an error in the run's log file (train.log) only: the terminal shows it once, on stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def fail(err: BaseException) -> NoReturn:
    """Stop with a configuration problem as one line on stderr and exit status 1."""
    raise SystemExit(f"error: {one_line(err)}") from None


def in_sweep() -> bool:
    """Whether this job is one of a multirun's (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """One training job. Returns what a hyper-parameter sweeper maximises: the best validation accuracy
    when the dataset has a validation split (``dataset.val_size``), else the final test accuracy."""
    with StopSignals() as signals:
        # 1. Build: the data, the assembled model and its training step, the loaders, the trackers.
        try:
            check_stop()  # a sweep's worker told to stop before this job began: the job closes at once
            job = build(cfg, rundir.hydra_run_info())
        except BaseException as err:  # noqa: BLE001 - recorded in the run's folder, then reported as below
            setting = isinstance(err, (config.ConfigError, OmegaConfBaseException))
            outcome = Outcome("failed", one_line(err), err) if setting else outcome_of(err)
            record_early_stop(Path(cfg.run_dir), outcome)
            if setting and not in_sweep():
                note_in_log(f"error: {outcome.reason}")
                fail(err)
            # In a sweep a setting that does not fit the data fails this job alone; the others run.
            return stopped(outcome)
        if cfg.print_config:
            log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
        log.info(job.describe())
        step, history, epochs, loaders = job.step, job.history, cfg.epochs, job.loaders

        # 2. Train: every epoch's metrics go to metrics.jsonl and W&B, then checkpoint.pt is replaced.
        outcome = Outcome("finished")
        try:
            job.tracker.start(parts.tracker_config(cfg, job.choices, job.world_size))
            for row in history:  # a resumed run's earlier epochs, so its record is complete
                job.tracker.log(row, int(row["epoch"]))
            progress = parts.show_progress(cfg) and job.writes
            combine = job.parallel.sum_metrics if job.parallel else None
            label = f"job {HydraConfig.get().job.num}: " if in_sweep() else ""  # a parallel sweep's jobs share the console
            for epoch in range(job.start_epoch + 1, epochs + 1):
                row: dict[str, Any] = {"epoch": epoch, "lr": step.lr()}
                bar = dict(progress=progress, refresh_every=cfg.refresh_every, combine=combine)
                row |= step.run_phase(loaders.train, "train", desc=f"epoch {epoch}/{epochs} train", **bar)
                step.epoch_end()
                if loaders.val is not None:
                    row |= step.run_phase(loaders.val, "val", desc=f"epoch {epoch}/{epochs} val", **bar)
                row |= step.run_phase(loaders.test, "test", desc=f"epoch {epoch}/{epochs} test", **bar)
                check_finite(row)  # a NaN or infinite loss: stop, keeping the last finite epoch's checkpoint
                with signals.held():  # a stop signal waits until the epoch's record is whole
                    if job.writes:
                        checkpoint.save(job.run_dir / checkpoint.CHECKPOINT_FILE, epoch, step, loaders.generator, [*history, row], job.config)
                    history.append(row)
                    job.tracker.log(row, epoch)
                log.info("%s%s", label, summary.describe_epoch(row, epochs))
        except BaseException as err:  # noqa: BLE001 - recorded below, then raised or reported
            outcome = outcome_of(err)

        # 3. Finish: the record says how the run ended and which epoch the checkpoint holds.
        last_epoch = int(history[-1]["epoch"]) if history else 0
        result = {"last_epoch": last_epoch, "world_size": job.world_size, **summary.summarize(history)}
        with signals.held():
            if outcome.status != "finished" and last_epoch:
                keep_resumed_checkpoint(job)
            try:
                job.tracker.finish(result | ({"reason": outcome.reason} if outcome.reason else {}), outcome.status)
            except Exception as err:  # noqa: BLE001 - e.g. a full disk: the outcome says so
                if outcome.status == "finished":
                    outcome = outcome_of(err)
            if job.writes:
                rundir.remove_parts(job.run_dir)
        if outcome.status != "finished":
            return stopped(outcome, kept(job, last_epoch, outcome.status))
    parallel.leave_together()  # torchrun's processes, once all have finished
    log.info("%s; run folder %s", summary.describe_summary(result), job.run_dir)
    return result.get("best/val/acc", result["final/test/acc"])


def stopped(outcome: Outcome, kept: str = "") -> float:
    """End a job that did not finish. A signal stops the process (a sweep too: exit 130/143). A crash raises
    its error. Any other failure is one line: exit status 1 for a single run; in a sweep the job's record
    says it failed, the next job runs, and the sweep exits with status 1 at the end, listing it."""
    error, line = outcome.error, "; ".join(filter(None, [outcome.reason, kept]))
    if isinstance(error, Interrupted):
        log.error(line)
        raise error
    if in_sweep():
        log.error("%s: %s", outcome.status, line, exc_info=None if outcome.expected else error)
        return math.nan
    if outcome.expected or error is None:
        note_in_log(f"error: {line}")
        raise SystemExit(f"error: {line}")
    log.error(line)
    raise error


def torchrun_args(argv: list[str]) -> list[str]:
    """``argv`` for one of torchrun's processes: every rank writes into the one folder rank 0 picks (its
    ``hydra.run.dir``, default timestamped), and only rank 0 writes Hydra's files and train.log there."""
    sweep = next((a for a in argv if a in ("-m", "--multirun") or a.replace(" ", "").upper() == "HYDRA.MODE=MULTIRUN"), None)
    if sweep is not None:
        raise SystemExit(f"error: {sweep}: a sweep cannot run under torchrun; start torchrun once per run (docs/scaling.md)")
    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        # conf/config.yaml's run folder, its ${now:...} fields filled with rank 0's time (ranks start apart).
        pattern = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml"))["hydra"]["run"]["dir"]
        now = time.localtime(parallel.agree(time.time()))
        extra.append("hydra.run.dir=" + re.sub(r"\$\{now:([^}]*)\}", lambda m: time.strftime(m.group(1), now), pattern))
    if parallel.torchrun_world()[0] != 0:  # type: ignore[index]
        extra += ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]", "hydra.job_logging.root.level=WARNING"]
    return argv + extra


def multirun_flag_first(argv: list[str]) -> list[str]:
    """``argv`` with ``-m``/``--multirun`` moved before the overrides: Hydra's argument parser takes its
    overrides in one piece, so ``python train.py loss=v9 -m epochs=3`` would otherwise be refused."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return argv[:1] + flags + [a for a in argv[1:] if a not in ("-m", "--multirun")]


def run() -> None:
    """The command line: ``python train.py [overrides]``, alone, as a sweep (``-m``) or under torchrun."""
    sys.argv = multirun_flag_first(sys.argv)
    try:
        sys.argv = rundir.resume_argv(sys.argv)  # resume=<folder>: that run's own settings, then the command line's
    except config.ConfigError as err:
        fail(err)
    if parallel.torchrun_world() is not None:  # started by torchrun: one run on several processes
        parallel.start_process_group()
        sys.argv = torchrun_args(sys.argv)
    try:
        main()
    except (config.ConfigError, HydraException, OmegaConfBaseException) as err:
        fail(err)
    except Interrupted as err:  # the job's record is closed: summary.json says "interrupted"
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before Hydra started the run: nothing was created
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    # Let Hydra's composition errors (unknown option or key) reach this handler as exceptions instead of
    # its multi-line report, so every config error reads the same: one line, exit status 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        # One write for the line and its newline: torchrun's processes share stderr, and Python's own report
        # writes the two apart, so the same error from two ranks could interleave into one garbled line.
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), f"{stop.code}\n".encode())
        raise SystemExit(1) from None
