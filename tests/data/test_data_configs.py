"""Every conf/dataset/*.yaml composes and instantiates to a Dataset with the reference settings."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import hydra.utils
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import sigprop.engine.config  # noqa: F401  registers train_schema, the first entry of conf/config.yaml
from sigprop.data import DATASETS, Dataset

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
# The reference implementation's normalisation and augmentation per dataset: mean, std, crop padding, flip.
REFERENCE = {
    "embedded": ((0.1307,), (0.3081,), 2, False),
    "mnist": ((0.1307,), (0.3081,), 2, False),
    "fashion_mnist": ((0.286,), (0.353,), 2, True),
    "cifar10": ((0.424, 0.415, 0.384), (0.283, 0.278, 0.284), 4, True),
    "cifar10_jpeg": ((0.424, 0.415, 0.384), (0.283, 0.278, 0.284), 4, True),
    "cifar100": ((0.438, 0.418, 0.377), (0.300, 0.287, 0.294), 4, True),
    "svhn": ((0.431, 0.430, 0.446), (0.197, 0.198, 0.199), 0, False),
    "stl10": ((0.447, 0.440, 0.407), (0.260, 0.257, 0.271), 0, False),
    "image_folder": (None, None, 0, False),
}


def dataset_config(name: str, data_dir: Path) -> DictConfig:
    """``cfg.dataset`` for ``dataset=<name>``: through the top config when it exists, else the group file alone."""
    if (CONF / "config.yaml").is_file():
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"dataset={name}", f"data_dir={data_dir}"])
    else:  # the top config is another part's file; the group files must not depend on more than data_dir
        cfg = OmegaConf.merge({"data_dir": str(data_dir)}, {"dataset": OmegaConf.load(CONF / "dataset" / f"{name}.yaml")})
    return cfg.dataset


def test_every_dataset_has_a_config() -> None:
    assert NAMES == sorted(REFERENCE) == sorted(DATASETS)


@pytest.mark.parametrize("name", NAMES)
def test_config_instantiates_with_reference_settings(name: str, tmp_path: Path) -> None:
    cfg = dataset_config(name, tmp_path)
    assert cfg.name == name
    assert cfg._target_ == f"sigprop.data.datasets.{DATASETS[name].__name__}"
    dataset = hydra.utils.instantiate(cfg)
    assert isinstance(dataset, Dataset) and type(dataset) is DATASETS[name]
    mean, std, crop, flip = REFERENCE[name]
    assert dataset.mean == mean and dataset.std == std
    assert dataset.augment_settings.crop_padding == crop and dataset.augment_settings.flip is flip
    assert dataset.augment_settings.cutout_patches == 0 and dataset.train_subset is None and dataset.test_subset is None
    if name != "embedded":  # the embedded subset needs no data folder
        assert dataset.root == tmp_path
    if "download" in cfg:
        assert cfg.download is True


def test_relative_data_dir_starts_at_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dataset = hydra.utils.instantiate(dataset_config("mnist", Path("rel/data")))
    assert dataset.root == tmp_path / "rel" / "data"


def test_default_config_loads_the_embedded_subset(tmp_path: Path) -> None:
    cfg = dataset_config("embedded", tmp_path)
    cfg.train_subset = 2000
    data = hydra.utils.instantiate(cfg).load()
    assert data.input_shape == (1, 28, 28) and len(data.train_labels) == 2000 and len(data.test_labels) == 10_000
    assert data.mean == (0.1307,) and data.augment is not None and data.augment.crop_padding == 2


def test_cifar10_jpeg_config_reads_the_prepared_tree(cifar_tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sigprop.data.datasets"):
        data = hydra.utils.instantiate(dataset_config("cifar10_jpeg", cifar_tree)).load()
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert torch.bincount(data.test_labels).tolist() == [8] * 10
    # The subset is far from the 50,000 / 10,000 images of CIFAR-10: the user is told it looks partial.
    assert "holds 200 train / 80 test images, the full dataset 50000 / 10000: a partial copy?" in caplog.text
    assert "python -m sigprop.data.prepare cifar10_jpeg" in caplog.text


def test_group_composes_under_hydra_with_the_documented_top_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hydra's compose API over a stand-in top config with the documented data_dir default."""
    shutil.copytree(CONF / "dataset", tmp_path / "conf" / "dataset")
    shutil.copytree(CONF / "base", tmp_path / "conf" / "base")  # what every dataset option starts from
    (tmp_path / "conf" / "config.yaml").write_text(
        "defaults:\n  - dataset: embedded\n  - _self_\ndata_dir: ${oc.env:SIGPROP_DATA_DIR,data}\n"
    )
    monkeypatch.setenv("SIGPROP_DATA_DIR", str(tmp_path / "env_data"))
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        default = compose(config_name="config")
        svhn = compose(config_name="config", overrides=["dataset=svhn", "dataset.extra=true", "dataset.train_subset=100"])
    assert type(hydra.utils.instantiate(default.dataset)).__name__ == "Embedded"
    dataset = hydra.utils.instantiate(svhn.dataset)
    assert dataset.root == tmp_path / "env_data" and dataset.extra is True and dataset.train_subset == 100
