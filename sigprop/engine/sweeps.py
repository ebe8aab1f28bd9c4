"""Every job of a multirun, listed before the first one starts (so all of them can be checked first).

Hydra's basic sweeper runs the cartesian product of the sweep's overrides (``loss=v9,v15 seed=0,1``:
four jobs). It offers no public call that lists them, so ``sweep_jobs`` repeats its rule with Hydra's
public override parser; ``tests/app/test_app_sweeps.py`` checks the result against the sweeper's own
expansion, so a change in Hydra shows there first. Other sweepers (plugins such as Optuna) choose
their jobs as they go: for them nothing is listed and each job is checked when it starts.
"""
from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

# The class name Hydra's sweeper config gives its basic sweeper (hydra/sweeper/basic).
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(config: DictConfig, parser: OverridesParser) -> list[list[str]]:
    """Every job's overrides in a multirun of Hydra's basic sweeper, in the order it runs them
    (``[]`` for other sweepers). ``config`` is the multirun's config (with its ``hydra`` node)."""
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return []
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    choices: dict[str, list[str]] = {}  # one list per key; a later override of a key replaces an earlier one
    for override in parser.parse_overrides(params + list(config.hydra.overrides.task)):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{key}: the basic sweeper takes lists, choice() and range(), not intervals")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]
