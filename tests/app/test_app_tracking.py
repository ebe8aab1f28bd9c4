"""The trackers on their own: W&B's mode choice asks wandb itself, never needs a login and never waits on a
server longer than its timeout; metrics.jsonl never overwrites; the W&B view of a sweep
(experiments/wandb_view.py) is built offline."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
import wandb
from app_helpers import load_script

from sigprop.tracking import JsonlTracker, TrackerError, WandbTracker
from sigprop.tracking.wandb_tracker import base_url, has_api_key, layer_table_columns, layer_table_rows

NO_SERVER = "http://127.0.0.1:9"  # the discard port: connections are refused at once


def fresh_wandb_settings() -> None:
    """wandb reads its settings (WANDB_* variables, files) once per process: read them again."""
    wandb.teardown()


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no settings file of the machine's
    fresh_wandb_settings()
    yield
    fresh_wandb_settings()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP address whose server accepts connections and never answers (a hung proxy or server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.usefixtures("no_credentials")
def test_wandb_auto_mode_goes_offline_without_a_key_or_a_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", NO_SERVER)
    fresh_wandb_settings()
    assert WandbTracker(tmp_path).resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key, but the server does not answer
    assert WandbTracker(tmp_path).resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's explicit choice wins
    fresh_wandb_settings()
    assert WandbTracker(tmp_path).resolve_mode() == "disabled"


@pytest.mark.usefixtures("no_credentials")
def test_wandb_server_and_key_are_the_ones_wandb_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is wandb's configured one (here its default), and the key `wandb login` wrote for that host
    in .netrc is found: a logged-in user goes online."""
    url = base_url()
    assert url == str(wandb.Settings().base_url)  # the installed wandb's default, whatever host that is
    assert not has_api_key(url)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {urlsplit(url).hostname}\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_api_key(url)


@pytest.mark.usefixtures("no_credentials")
def test_wandb_silent_server_costs_at_most_the_timeout(silent_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A server that accepts connections and never answers: auto mode goes offline with one warning, online
    stops with one line; neither waits longer than the timeout."""
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    fresh_wandb_settings()
    start = time.monotonic()
    assert WandbTracker(tmp_path, timeout=3).resolve_mode() == "offline"
    with pytest.raises(TrackerError, match=f"^W&B online: the W&B server {silent_server} did not answer within 1 s"):
        WandbTracker(tmp_path, mode="online", timeout=3).resolve_mode()
    assert time.monotonic() - start < 2 * 3


@pytest.mark.usefixtures("no_credentials")
def test_wandb_refused_port_is_named_as_refused_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A server address where nothing listens: online stops with one line saying the connection was refused
    (not that it "did not answer within" the timeout), without waiting for the timeout."""
    with socket.socket() as probe:  # a free port, closed again: connecting to it is refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    fresh_wandb_settings()
    start = time.monotonic()
    with pytest.raises(TrackerError, match=f"^W&B online: the W&B server {url} refused the connection"):
        WandbTracker(tmp_path, mode="online", timeout=30).resolve_mode()
    assert time.monotonic() - start < 10


@pytest.mark.usefixtures("no_credentials")
def test_wandb_mistakes_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^logger.mode=online needs a W&B API key"):
        WandbTracker(tmp_path, mode="online")
    with pytest.raises(ValueError, match="logger.mode"):
        WandbTracker(tmp_path, mode="sometimes")
    with pytest.raises(ValueError, match="^logger.timeout=0: must be a positive number"):
        WandbTracker(tmp_path, timeout=0)
    monkeypatch.setenv("WANDB_MODE", "online")  # no key: the same error, naming the variable
    fresh_wandb_settings()
    with pytest.raises(ValueError, match="^WANDB_MODE=online needs a W&B API key"):
        WandbTracker(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "bogus")
    fresh_wandb_settings()
    with pytest.raises(ValueError) as err:
        WandbTracker(tmp_path)
    assert str(err.value).startswith("WANDB_MODE=bogus: Input should be 'online'") and "\n" not in str(err.value)


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
