"""The sweep pre-check lists exactly the jobs Hydra's basic sweeper runs.

``sigprop.engine.sweeps`` repeats the sweeper's rule with Hydra's public override parser; this test
compares it with the sweeper's own expansion (Hydra's internal module, imported here only), so an
upgrade of Hydra that changes either fails here, loudly, before a sweep is checked wrongly.
"""
from __future__ import annotations

import pytest
from app_helpers import compose_config
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, open_dict

from sigprop.engine.sweeps import BASIC_SWEEPER, sweep_jobs

SWEEPS = {
    "lists": ["loss=v9,v15", "seed=0,1,2"],
    "range and choice": ["seed=range(0,3)", "loss=choice(v9,v15)", "epochs=1"],
    "a key given twice": ["loss=v9,v15", "batch_size=64", "loss=v1,v14"],
    "list and quoted values": ["optimizer.betas=[0.9,0.99]", "seed=1,2", "logger.name='a b'"],
    "appended and deleted keys": ["+model.width=3,4", "~scheduler", "++epochs=2"],
    "sort and shuffle": ["seed=sort(3,1,2)", "loss=shuffle(v9)"],
}


def multirun_config(overrides: list[str], params: dict[str, str] | None = None) -> DictConfig:
    """The config a multirun's callbacks see: the composed config with the command line's overrides recorded."""
    config = compose_config()
    with open_dict(config):
        config.hydra.overrides.task = overrides
        config.hydra.sweeper.params = params
    return config


@pytest.mark.parametrize("overrides", SWEEPS.values(), ids=SWEEPS.keys())
def test_jobs_are_the_basic_sweepers_jobs(overrides: list[str]) -> None:
    config = multirun_config(overrides)
    assert config.hydra.sweeper._target_ == BASIC_SWEEPER == f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
    parser = OverridesParser.create()
    (hydras,) = BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)
    ours = sweep_jobs(config, parser)
    assert ours == hydras and len(ours) > 1


def test_sweeper_params_come_first_and_intervals_are_refused() -> None:
    config = multirun_config(["seed=0,1"], params={"loss": "v9,v15"})
    assert sweep_jobs(config, OverridesParser.create()) == [
        ["loss=v9", "seed=0"], ["loss=v9", "seed=1"], ["loss=v15", "seed=0"], ["loss=v15", "seed=1"]
    ]
    with pytest.raises(ValueError, match="optimizer.lr: the basic sweeper takes lists"):
        sweep_jobs(multirun_config(["optimizer.lr=interval(0.1,1.0)"]), OverridesParser.create())


def test_other_sweepers_list_no_jobs() -> None:
    config = multirun_config(["seed=0,1"])
    config.hydra.sweeper._target_ = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweep_jobs(config, OverridesParser.create()) == []
