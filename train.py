"""Train a network with Signal Propagation (or, as the baseline, backpropagation) from the configs in conf/.

    python train.py                                    # SigProp on the embedded MNIST subset
    python train.py model=vgg8 dataset=cifar10         # swap any part: one config group each
    python train.py signal=projection loss=v9,v15 -m   # a sweep: one job per combination

Read top to bottom: check and build everything (nothing is written until this passes), start the
trackers, train epoch by epoch (metrics.jsonl, W&B, checkpoint.pt after each), finish.
"""
from __future__ import annotations

import logging
import os
from typing import NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from sigprop.engine import build, checkpoint, loop

log = logging.getLogger("train")


def fail(err: BaseException) -> NoReturn:
    """Stop with a configuration problem as one line on stderr and exit status 1 (a sweep stops here too)."""
    raise SystemExit(f"error: {build.one_line(err)}") from None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One training job; returns the final test accuracy (what a hyper-parameter sweeper maximises)."""
    try:
        job = build.prepare(cfg, build.hydra_run_info())
    except (build.ConfigError, OmegaConfBaseException) as err:
        fail(err)

    def save(epoch: int, history: list[dict[str, float]]) -> None:
        checkpoint.save(job.run_dir / checkpoint.CHECKPOINT_FILE, epoch, job.learner, job.generator, history)

    job.tracker.start(job.tracker_config)
    try:
        history = loop.fit(
            job.learner, job.train_loader, job.test_loader, job.settings.epochs, job.tracker,
            start_epoch=job.start_epoch, history=job.history, save=save,
            progress=job.progress, refresh_every=job.settings.refresh_every,
        )
    except BaseException:
        job.tracker.finish({}, failed=True)  # close the W&B run (marked failed) before the error propagates
        raise
    summary = loop.summarize(history)
    job.tracker.finish(summary)
    log.info(
        "final test accuracy %.4f (best %.4f at epoch %d); run folder %s",
        summary["final/test/acc"], summary["best/test/acc"], summary["best/epoch"], job.run_dir,
    )
    return summary["final/test/acc"]


if __name__ == "__main__":
    # Let Hydra's composition errors (unknown option or key) reach this handler as exceptions instead of
    # its multi-line report, so every config error reads the same: one line, exit status 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (build.ConfigError, HydraException, OmegaConfBaseException) as err:
        fail(err)
