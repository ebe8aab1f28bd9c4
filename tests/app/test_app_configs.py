"""Every option of every config group composes, is built as train.py builds it into the sigprop
objects it names and trains one batch of real images; the presets hold the settings they promise."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from app_helpers import CONF_DIR, build_step, compose_config, load_dataset, options, train
from hydra.errors import HydraException
from omegaconf import DictConfig

from sigprop import propagators, signals
from sigprop.data.datasets import Dataset, ImageData
from sigprop.data.loader import TensorLoader
from sigprop.engine import TrainStep, checks, parts
from sigprop.engine.rundir import choices_of
from sigprop.engine.config import ConfigError, check_settings
from sigprop.utils import one_line

# Networks small enough for one CPU step each; the option under test is otherwise unchanged.
SMALL_MLP = ("model.num_hidden=32",)
SMALL_VGG = ("model.feat_mult=0.0625", "model.num_hidden=32")
COVERED = ("signal", "propagator", "loss", "model", "optimizer", "scheduler", "logger", "experiment")
OFFLINE_DATASETS = ("embedded", "mnist")  # the ones a test machine has; the others are built, not loaded


def small(cfg: DictConfig) -> tuple[str, ...]:
    return SMALL_VGG if "vgg" in cfg.model._target_ else SMALL_MLP


def case_overrides(group: str, option: str) -> list[str]:
    """Overrides that select ``group=option`` with a tiny network (and a signal ``v1`` can use)."""
    overrides = [f"{group}={option}"]
    if group == "loss" and option == "v1":
        overrides.append("signal.per_class=true")  # v1 scores one signal row per class
    return overrides + list(small(compose_config(overrides)))


@pytest.fixture(scope="module")
def embedded() -> ImageData:
    """300 real training images of the embedded MNIST subset (loaded once for every case)."""
    cfg = compose_config(["dataset.train_subset=300", "dataset.test_subset=100"])
    return load_dataset(cfg)


def train_one_batch(cfg: DictConfig, data: ImageData) -> tuple[TrainStep, dict[str, bool]]:
    """Build the training step ``cfg`` describes for ``data``, check it, take one training step; returns the
    step and, per parameter name, whether the step changed it."""
    choices = choices_of(cfg)
    step = build_step(cfg, data)
    checks.check_forward(step, data, torch.device("cpu"), choices)
    x, y = next(iter(TensorLoader(data.train_images[:64], data.train_labels[:64], 64, data.mean, data.std)))
    before = {n: p.detach().clone() for n, p in step.model.named_parameters()}
    step.train()
    loss, logits = step.train_step(x, y)
    assert torch.isfinite(loss), f"{choices}: loss {loss}"
    assert logits.shape == (64, data.num_classes)
    changed = {n: not torch.equal(before[n], p) for n, p in step.model.named_parameters()}
    return step, changed


CASES = [(group, option) for group in COVERED for option in options(group)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_builds_and_trains_one_batch(group: str, option: str, embedded: ImageData) -> None:
    cfg = compose_config(case_overrides(group, option))
    assert choices_of(cfg)[group] == option
    checks.check_config(cfg)
    _, changed = train_one_batch(cfg, embedded)
    assert any(changed.values()), f"{group}={option}: one training step changed no parameter"


def test_every_group_has_its_options() -> None:
    """The options the README documents exist (a renamed file would silently drop one)."""
    assert options("signal") == ["context", "draw", "projection", "projection_fixed"]
    assert options("propagator") == ["backprop", "fixed", "loss"]
    assert options("loss") == ["v1", "v14", "v15", "v9"]
    assert {"mlp", "mlp_small", "cnn", "vgg6", "vgg8", "vgg11"} <= set(options("model"))
    assert options("optimizer") == ["adam", "amsgrad", "sgd"]
    assert options("scheduler") == ["multistep", "none"]
    assert options("logger") == ["none", "wandb"]
    assert {"cifar10_reference", "mnist_mlp"} <= set(options("experiment"))


def test_config_yaml_lists_every_option_of_the_groups_it_lists() -> None:
    """conf/config.yaml's defaults comment each group with its options (``# conf/model/: mlp_small, mlp, ...``):
    every option file of the group is named there, so a reader of the config sees all of them."""
    listed = re.findall(r"#\s*conf/(\w+)/:\s*(.*)", (CONF_DIR / "config.yaml").read_text())
    assert len(listed) >= 8, listed
    for group, comment in listed:
        named = set(re.findall(r"\w+", re.sub(r"\([^)]*\)", "", comment)))  # without the remarks in brackets
        assert set(options(group)) <= named or group == "experiment", f"conf/config.yaml lists {group}: {comment!r}, not {options(group)}"


def test_help_opens_with_what_the_app_does(tmp_path: Path) -> None:
    """``python train.py --help``: what the application does and its two commands first, then Hydra's list of
    the config groups and the composed config."""
    result = train(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("train.py trains a network with Signal Propagation"), lines[:3]
    assert "python train.py" in result.stdout and "== Configuration groups ==" in result.stdout
    assert "model: cnn, mlp, mlp_small, vgg11, vgg6, vgg8" in result.stdout
    assert "is powered by Hydra" not in result.stdout


@pytest.mark.parametrize("dataset", options("dataset"))
def test_dataset_option_builds(dataset: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every dataset config instantiates; the ones present offline load and train one batch."""
    data_dir = request.getfixturevalue("mnist_data_dir") if dataset == "mnist" else tmp_path
    subsets = ["dataset.train_subset=200", "dataset.test_subset=100"]
    cfg = compose_config([f"dataset={dataset}", f"data_dir={data_dir}", *subsets, *SMALL_MLP])
    built = parts.build_group(cfg, "dataset", choices_of(cfg))
    assert isinstance(built, Dataset)
    if dataset not in OFFLINE_DATASETS:
        return
    data = parts.load_data(built)
    assert len(data.train_labels) == 200 and data.input_shape == (1, 28, 28)
    train_one_batch(cfg, data)


def test_groups_build_the_sigprop_objects_they_name(embedded: ImageData) -> None:
    """conf/propagator builds the propagators class that wraps every hidden layer; conf/signal the generator
    with its formatter; a per-class signal is passed to every learning propagator, recompute_chunk only in lowmem."""
    def wrapped(overrides: list[str]) -> TrainStep:
        return build_step(compose_config([*overrides, *SMALL_MLP, "model=mlp", "model.num_layers=3"]), embedded)

    expected = {"loss": propagators.Loss, "fixed": propagators.Fixed, "backprop": propagators.Identity}
    for option, cls in expected.items():
        hidden = list(wrapped([f"propagator={option}"]).model.model)[:-1]
        assert hidden and all(type(m) is cls for m in hidden), (option, hidden)

    default = wrapped([])
    assert isinstance(default.model.signal, propagators.signals.Loss)
    formatter, generator = default.model.signal.module
    assert isinstance(formatter, signals.LabelNumberToOnehot) and isinstance(generator, signals.ProjectionContextInput)
    learning = [m for m in default.model.modules() if getattr(m, "trained_by", None) == "local"]
    assert len(learning) == 3 and all(m.per_class_signal is False for m in learning)  # the signal and 2 hidden layers
    assert all(m.recompute_chunk is None for m in learning if isinstance(m, propagators.Loss))

    per_class = wrapped(["signal=context", "signal.per_class=true", "step.mode=lowmem", "step.recompute_chunk=4"])
    assert isinstance(per_class.model.signal.module[1], signals.ProjectionContext)
    assert isinstance(per_class.model.signal.module[0][1], signals.DistinctBatchLabelsOnehot)
    learning = [m for m in per_class.model.modules() if getattr(m, "trained_by", None) == "local"]
    assert len(learning) == 4 and all(m.per_class_signal is True for m in learning)
    assert [m.recompute_chunk for m in learning if isinstance(m, propagators.Loss)] == [4, 4, 4]

    drawn = wrapped(["signal=draw"])
    assert isinstance(drawn.model.signal, propagators.signals.Fixed)
    assert isinstance(drawn.model.signal.module[1], signals.FixedDrawContext)
    # Every label draws its own image (the reference's placement would leave 28x28 images blank).
    images = drawn.model.signal.module((torch.zeros(10, 1, 28, 28), torch.arange(10)))[1].flatten(1)
    assert len({tuple(row.tolist()) for row in images}) == 10

    fused = [m.fuse_ht for m in wrapped(["step.fuse_ht=true"]).model.modules() if isinstance(m, propagators.Loss)]
    assert fused == [True, True]
    split = [m.fuse_ht for m in wrapped(["step.fuse_ht=false"]).model.modules() if isinstance(m, propagators.Loss)]
    assert split == [False, False]


def test_fixed_propagator_leaves_hidden_layers_alone(embedded: ImageData) -> None:
    """propagator=fixed: hidden layers keep their initial weights; propagator=loss: they learn."""
    def hidden(step: TrainStep, cls: type) -> list[str]:
        return [f"{n}.{p}" for n, m in step.model.named_modules() if isinstance(m, cls) for p, _ in m.named_parameters()]

    fixed, changed = train_one_batch(compose_config(["propagator=fixed", "signal=context", *SMALL_MLP]), embedded)
    names = hidden(fixed, propagators.Fixed)
    assert names and not any(changed[n] for n in names)
    learning, changed = train_one_batch(compose_config(["propagator=loss", "signal=context", *SMALL_MLP]), embedded)
    names = hidden(learning, propagators.Loss)
    assert names and all(changed[n] for n in names if n.endswith("weight"))


def test_cifar10_reference_preset_is_the_reference_run() -> None:
    cfg = compose_config(["experiment=cifar10_reference"])
    choices = choices_of(cfg)
    assert {k: choices[k] for k in ("dataset", "model", "signal", "loss", "optimizer", "scheduler")} == {
        "dataset": "cifar10", "model": "vgg8", "signal": "projection",
        "loss": "v15", "optimizer": "adam", "scheduler": "multistep",
    }
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer.lr, cfg.loss.topk) == (400, 128, 5e-4, 6)
    assert (cfg.model.norm, cfg.model.nonlin, cfg.model.dropout) == ("instance", "leakyrelu", 0.2)
    assert (list(cfg.scheduler.milestones), cfg.scheduler.gamma) == ([200, 300, 350, 375], 0.25)
    # Offline the same run reads the JPEG copy; the command line wins over the preset's dataset.
    assert choices_of(compose_config(["experiment=cifar10_reference", "dataset=cifar10_jpeg"]))["dataset"] == "cifar10_jpeg"


def test_top_level_settings_are_typed_and_checked() -> None:
    """Hydra checks the types against the registered schema while composing; ranges are checked after."""
    for override, message in (("epochs=abc", "could not be converted to Integer"), ("step.mode=fast", "expected one of")):
        with pytest.raises(HydraException) as err:
            compose_config([override])
        assert one_line(err.value).startswith(f"{override}: ") and message in one_line(err.value)
    for override in ("batch_size=0", "progress=sometimes", "step.recompute_chunk=0", "threads=0"):
        with pytest.raises(ConfigError, match=f"^{override.split('=')[0]}="):
            check_settings(compose_config([override]))
