"""The trackers on their own: W&B's mode choice never needs a login or a network; metrics.jsonl never overwrites;
the W&B view of a sweep (experiments/wandb_view.py) is built offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_helpers import load_script

from sigprop.tracking import JsonlTracker, WandbTracker
from sigprop.tracking.wandb_tracker import layer_table_columns, layer_table_rows

NO_SERVER = "http://127.0.0.1:9"  # the discard port: connections are refused at once


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", NO_SERVER)


@pytest.mark.usefixtures("no_credentials")
def test_wandb_auto_mode_goes_offline_without_a_key_or_a_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert WandbTracker(tmp_path).resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key, but the server does not answer
    assert WandbTracker(tmp_path).resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's explicit choice wins
    assert WandbTracker(tmp_path).resolve_mode() == "disabled"


@pytest.mark.usefixtures("no_credentials")
def test_wandb_online_without_a_key_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a W&B API key"):
        WandbTracker(tmp_path, mode="online")
    with pytest.raises(ValueError, match="logger.mode"):
        WandbTracker(tmp_path, mode="sometimes")


def test_jsonl_appends_one_line_per_epoch_and_never_overwrites(tmp_path: Path) -> None:
    tracker = JsonlTracker(tmp_path)
    tracker.start({})
    tracker.log({"epoch": 1, "test/acc": 0.5}, 1)
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "test/acc": 0.5}  # on disk already
    tracker.log({"epoch": 2, "test/acc": float("nan")}, 2)
    tracker.finish({"best/test/acc": 0.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["test/acc"] for line in lines] == [0.5, None]  # NaN as null: strict JSON
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "finished", "best/test/acc": 0.5}
    with pytest.raises(FileExistsError):
        JsonlTracker(tmp_path).start({})


def test_layer_table_has_one_row_per_layer() -> None:
    row = {"epoch": 3, "train/acc": 0.9, "train/signal/acc": 0.8, "test/signal/acc": 0.7, "test/layer01/loss": 1.5}
    assert layer_table_rows(row) == [["signal", None, 0.8, None, 0.7], ["layer01", None, None, 1.5, None]]
    row |= {"val/acc": 0.85, "val/signal/acc": 0.75}  # with a validation split: its columns between train and test
    assert layer_table_columns(row) == ["train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"]
    assert layer_table_rows(row)[0] == ["signal", None, 0.8, None, 0.75, None, 0.7]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # wandb-workspaces' own pydantic v1 validators
def test_wandb_view_has_a_chart_per_layer_grouped_by_loss_and_accuracy_by_method(tmp_path: Path) -> None:
    """The saved view, built offline: the sweep's runs only, one chart per layer grouped by loss, the output's
    accuracy grouped by method."""
    view_script = load_script("wandb_view")
    view = view_script.build_view("team", "sigprop", "reproduce-mnist", ["signal", "layer01", "layer02"])
    model = view._to_model()  # what save() sends to the server
    spec = model.spec.section.panel_bank_config
    layers, methods = spec.sections
    assert [p.config.metrics for p in layers.panels] == [["test/signal/acc"], ["test/layer01/acc"], ["test/layer02/acc"]]
    assert {p.config.group_by for p in layers.panels} == {"choices.value.loss"}
    assert {p.config.x_axis for p in layers.panels} == {"epoch"}
    assert [p.config.metrics for p in methods.panels] == [["test/acc"], ["val/acc"], ["best/test/acc"]]
    assert {p.config.group_by for p in methods.panels} == {"method.value"}
    assert all(p.config.aggregate for p in [*layers.panels, *methods.panels])
    assert "sweep=reproduce-mnist" in str(view.runset_settings.filters)
    # The layers come from the runs' metrics, in network order.
    (tmp_path / "0").mkdir()
    row = {"epoch": 1, "test/acc": 0.9, "test/layer02/acc": 0.8, "test/signal/acc": 0.7, "test/layer01/acc": 0.8,
           "train/layer03/acc": 0.5, "test/layer01/loss": 1.0}
    (tmp_path / "0" / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    assert view_script.layers_from_folders(tmp_path) == ["signal", "layer01", "layer02"]
