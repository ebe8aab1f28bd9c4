"""Every setting has a type and a range (sigprop/engine/settings.py), checked before any work: a bad value is one
line that names it, for a single run and for every job of a sweep before the first starts. The ranges that need
the data (a validation split of one sample under batch norm) stop the run before its first epoch."""
from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import TINY, compose_config, load_train, train
from omegaconf import DictConfig

from sigprop.engine import checks, parts
from sigprop.engine.config import ConfigError
from sigprop.engine.rundir import RunInfo, choices_of

REFUSED = {  # override: the start of the one-line message
    "dataset.flip=maybe": "dataset.flip=maybe: must be true or false",
    "dataset.flip=1": "dataset.flip=1: must be true or false",
    "model.bias=maybe": "model.bias=maybe: must be true or false",
    "signal.per_class=maybe": "signal.per_class=maybe: must be true or false",
    "model.dropout=-0.1": "model.dropout=-0.1: must be a number in [0, 1)",
    "dataset.crop_padding=1000": "dataset=embedded: dataset.crop_padding=1000: must be from 0 to 27 (dataset embedded's images are 28x28)",
    "dataset.cutout_length=100000": "dataset.cutout_length=100000: must be a whole number from 0 to 65,535",
    "dataset.cutout_length=29": "dataset=embedded: dataset.cutout_length=29: must be from 0 to 28",
    "logger.tags=notalist": "logger.tags=notalist: must be a list of strings",
    "epochs=99999999999999999999": "epochs=99999999999999999999: must be a whole number from 1 to 100,000",
    "seed=99999999999999999999999": "seed=99999999999999999999999: must be a whole number from 0 to 9,223,372,036,854,775,807",
    "dataset.subset_seed=abc": "dataset.subset_seed=abc: must be a whole number from 0 to 4,294,967,295",
    "optimizer.lr=abc": "optimizer.lr=abc: must be a finite number of at least 0",
    "optimizer.betas=[0.9]": "optimizer.betas=[0.9]: must be a list of 2 numbers in [0, 1)",
    "model.num_hidden=-1": "model.num_hidden=-1: must be a whole number from 1 to",
    "model.norm=layers": "model.norm=layers: must be one of batch, instance, none",
    "optimizer._target_=torch.optim.LBFGS": "optimizer=adam: optimizer._target_ is LBFGS, which needs a closure in step()",
    "optimizer._target_=torch.optim.SparseAdam": "optimizer=adam: optimizer._target_ is SparseAdam, which cannot step on the dense gradients",
}
# Settings of the chosen options that the optimizers above do not take.
WITHOUT = {"torch.optim.LBFGS": ["~optimizer.betas", "~optimizer.weight_decay"], "torch.optim.SparseAdam": ["~optimizer.weight_decay"]}


def check(cfg: DictConfig) -> None:
    """The checks before a run's folder exists, then what train.py's build checks before any step: the dataset's
    settings against its images, the optimizer's trial step."""
    checks.check_config(cfg)
    choices = choices_of(cfg)
    parts.build_group(cfg, "dataset", choices)
    checks.check_optimizer(parts.build_group(cfg, "optimizer", choices), choices)


@pytest.mark.parametrize("override", list(REFUSED))
def test_a_bad_value_is_refused_before_any_work_in_one_line(override: str) -> None:
    extra = WITHOUT.get(override.split("=")[1], [])
    cfg = compose_config(["logger=wandb", override, *extra])
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert str(err.value).startswith(REFUSED[override]) and "\n" not in str(err.value), str(err.value)


def test_every_refused_setting_is_named_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        checks.check_config(compose_config(["dataset.flip=maybe", "model.dropout=2", "logger.tags=x"]))
    assert str(err.value).count(": must be ") == 3


def test_an_empty_wandb_mode_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "")
    cfg = compose_config(["logger=wandb"])
    with pytest.raises(ConfigError, match="^logger: WANDB_MODE is set but empty: unset it"):
        parts.make_tracker(parts.build_group(cfg, "logger", choices_of(cfg)), RunInfo(Path("unused")))


def test_a_sweep_is_checked_job_by_job_before_its_first_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = train(["-m", *TINY, "logger=none", "model.num_hidden=8,-1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: model.num_hidden=-1: must be a whole number from 1 to") and "(in the sweep's job " in line
    assert not (sweep / "0").exists()


def test_batch_statistics_need_a_validation_split_of_two(tmp_path: Path) -> None:
    """With batch norm (the default MLP's, batch statistics at evaluation too) a validation split of one
    sample is refused before the first epoch, in one line naming it."""
    run_dir = tmp_path / "run"
    result = train([*TINY, "logger=none", "dataset.val_size=1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: dataset.val_size=1: model=mlp_small normalises with batch statistics"), line
    assert not (run_dir / "metrics.jsonl").exists()


def test_a_training_subset_of_one_is_named_before_any_step(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "logger=none", "dataset.train_subset=1"])
    with pytest.raises(ConfigError, match=r"^dataset.train_subset=1: model=mlp_small normalises with batch statistics"):
        load_train().build(cfg, RunInfo(tmp_path / "run", choices=choices_of(cfg)))
