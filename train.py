"""Train a network with Signal Propagation (or, as the baseline, backpropagation) from the configs in conf/.

    python train.py                                    # SigProp on the embedded MNIST subset
    python train.py model=vgg8 dataset=cifar10         # swap any part: one config group each
    python train.py -m signal=projection loss=v9,v15   # a sweep: one job per combination

Read top to bottom:
1. Check and build everything; nothing is written until this passes (sigprop/engine/build.py). The
   network (sigprop/nets) gets the configured signal in front and every hidden layer wrapped in the
   configured propagator (sigprop/engine/assemble.py): with `propagator=loss` each hidden layer
   computes its local loss and steps its own optimizer inside the forward pass
   (`sigprop.propagators.Loss`, sigprop/propagators/learn.py); with `step.mode=fused` the local
   losses are applied by one backward in the training step (sigprop/engine/step.py).
2. Train epoch by epoch. `loop.run_phase` runs the batches and reads every layer's metrics
   (`train/layer01/acc`, ...); the tracker writes them to metrics.jsonl and W&B
   (sigprop/tracking/wandb_tracker.py); checkpoint.pt is replaced after each epoch.
3. Finish: summary.json, W&B summary, one line with the final accuracy.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sigprop.engine import build, checkpoint, config, loop

log = logging.getLogger("train")


def fail(err: BaseException) -> NoReturn:
    """Stop with a configuration problem as one line on stderr and exit status 1 (a sweep stops here too)."""
    raise SystemExit(f"error: {config.one_line(err)}") from None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One training job. Returns what a hyper-parameter sweeper maximises: the best validation accuracy
    when the dataset has a validation split (``dataset.val_size``), else the final test accuracy."""
    # 1. Check and build: data, the assembled model and its training step, loaders, trackers.
    try:
        job = build.prepare(cfg, build.hydra_run_info())
    except (config.ConfigError, OmegaConfBaseException) as err:
        fail(err)
    if cfg.print_config:
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    log.info(job.describe())
    step, history, epochs = job.step, job.history, cfg.epochs

    # 2. Train: every epoch's metrics go to metrics.jsonl and W&B, then checkpoint.pt is replaced.
    job.tracker.start(job.tracker_config)
    try:
        for row in history:  # a resumed run's earlier epochs, so its record is complete
            job.tracker.log(row, int(row["epoch"]))
        for epoch in range(job.start_epoch + 1, epochs + 1):
            row = {"epoch": epoch, "lr": step.lr()}
            bar = dict(progress=job.progress, refresh_every=cfg.refresh_every)
            row |= loop.run_phase(step, job.train_loader, "train", desc=f"epoch {epoch}/{epochs} train", **bar)
            step.epoch_end()
            if job.val_loader is not None:
                row |= loop.run_phase(step, job.val_loader, "val", desc=f"epoch {epoch}/{epochs} val", **bar)
            row |= loop.run_phase(step, job.test_loader, "test", desc=f"epoch {epoch}/{epochs} test", **bar)
            history.append(row)
            job.tracker.log(row, epoch)
            log.info(loop.describe_epoch(row, epochs))
            checkpoint.save(job.run_dir / checkpoint.CHECKPOINT_FILE, epoch, step, job.generator, history)
    except BaseException:
        job.tracker.finish({}, failed=True)  # close the W&B run (marked failed) before the error propagates
        raise

    # 3. Finish.
    summary = loop.summarize(history)
    job.tracker.finish(summary)
    log.info("%s; run folder %s", loop.describe_summary(summary), job.run_dir)
    return summary.get("best/val/acc", summary["final/test/acc"])


def multirun_flag_first(argv: list[str]) -> list[str]:
    """``argv`` with ``-m``/``--multirun`` moved before the overrides: Hydra's argument parser takes its
    overrides in one piece, so ``python train.py loss=v9 -m epochs=3`` would otherwise be refused."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return argv[:1] + flags + [a for a in argv[1:] if a not in ("-m", "--multirun")]


if __name__ == "__main__":
    # Let Hydra's composition errors (unknown option or key) reach this handler as exceptions instead of
    # its multi-line report, so every config error reads the same: one line, exit status 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = multirun_flag_first(sys.argv)
    try:
        main()
    except (config.ConfigError, HydraException, OmegaConfBaseException) as err:
        fail(err)
