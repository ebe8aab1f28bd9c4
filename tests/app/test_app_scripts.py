"""The scripts of experiments/ as a user runs them: what they share comes from the installed package (no
``sys.path`` edits, no importing each other by path), sweeps write under ``outputs/``, and bad input is one line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app_helpers import ROOT, compose_config

SCRIPTS = ("compare", "reproduce", "benchmark", "gpu_check", "wandb_view")


def script(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python experiments/<name>.py *args`` from ``cwd``, with this checkout's package importable as installed."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / f"{name}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_scripts_import_the_package_not_each_other_by_path(tmp_path: Path) -> None:
    """No script edits ``sys.path``; each starts (``--help``) from any folder with only the package installed."""
    for name in SCRIPTS:
        source = (ROOT / "experiments" / f"{name}.py").read_text()
        assert "sys.path" not in source, name
        result = script(name, "--help", cwd=tmp_path)
        assert result.returncode == 0 and "usage:" in result.stdout, f"{name}: {result.stderr[-2000:]}"
    assert not (ROOT / "scripts").exists()  # the embedded subset's builder is python -m sigprop.data.embedded


def test_run_records_are_read_by_the_package(tmp_path: Path) -> None:
    from sigprop.tracking import records

    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    (job / "metrics.jsonl").write_text('{"epoch": 1, "test/acc": 0.5, "test/signal/acc": 0.4}\n')
    run = records.load_run(job)
    assert run.rows == [{"epoch": 1, "test/acc": 0.5, "test/signal/acc": 0.4}] and run.layers() == ["signal"]
    assert run.status == "unfinished" and records.run_folders(tmp_path / "sweep") == [job]


def test_embedded_builder_is_a_module_of_the_package(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "sigprop.data.embedded", "--source", str(tmp_path), "--out",
                             str(tmp_path / "x.npz")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not (tmp_path / "x.npz").exists()
    assert result.stderr.strip().splitlines()[-1] == (
        f"python -m sigprop.data.embedded: --source {tmp_path}: train-images-idx3-ubyte(.gz) not found; "
        "the four MNIST IDX files must be there")


def test_sweeps_write_under_outputs() -> None:
    cfg = compose_config()
    assert str(cfg.hydra.sweep.dir).startswith("outputs/multirun/")
    assert str(cfg.hydra.run.dir).startswith("outputs/")


def test_one_rule_for_settings_that_do_not_change_results() -> None:
    """Hydra's run names (W&B), compare.py's labels, reproduce.py's commands and what a resume may change all
    follow ``NEUTRAL`` of sigprop/engine/config.py; no script keeps a list of its own."""
    from app_helpers import load_script

    from sigprop.engine.config import NEUTRAL, RESUMABLE, changes_results

    neutral = ["threads=1", "device=cpu", "logger.mode=offline", "logger.tags=[a]", "step.mode=lowmem", "data_dir=d",
               "progress=false"]
    results = ["epochs=3", "loss=v9", "seed=1", "step.precision=bf16", "step.fuse_ht=true", "optimizer.lr=0.1"]
    assert not any(map(changes_results, [*neutral, "logger=none", "+logger.foo=1", "hydra.run.dir=x", "~resume"]))
    assert all(map(changes_results, results))
    cfg = compose_config(neutral + results)
    assert cfg.hydra.job.override_dirname == ",".join(sorted(results))
    reproduce = load_script("reproduce")
    row = reproduce.TABLES["mnist"][0]
    assert reproduce.changes_results is changes_results
    assert row.command([*neutral, "epochs=3"]) == row.command() + " epochs=3"
    assert load_script("compare").changes_results is changes_results
    assert set(RESUMABLE) - set(NEUTRAL) == {"epochs"}
    for name in SCRIPTS:
        assert "exclude_keys" not in (ROOT / "experiments" / f"{name}.py").read_text(), name


def test_wandb_view_dry_run_is_readable_and_takes_a_sweep_folder(tmp_path: Path) -> None:
    """``--sweep`` takes the id or the sweep's folder (whose runs then give the layers); the dry run prints one
    short line per section and chart."""
    by_id = script("wandb_view", "--project", "p", "--sweep", "2026-12-02_06-47-57", "--layers", "signal", "layer01",
                   "--dry-run", cwd=tmp_path)
    job = tmp_path / "outputs" / "multirun" / "2026-12-02" / "06-47-57" / "0"
    job.mkdir(parents=True)
    (job / "metrics.jsonl").write_text('{"epoch": 1, "test/acc": 0.5, "test/signal/acc": 0.4, "test/layer01/acc": 0.45}\n')
    by_folder = script("wandb_view", "--project", "p", "--sweep", "outputs/multirun/2026-12-02/06-47-57", "--dry-run",
                       cwd=tmp_path)
    assert by_id.returncode == 0 and by_folder.returncode == 0, by_id.stderr + by_folder.stderr
    assert by_id.stdout == by_folder.stdout
    lines = by_id.stdout.splitlines()
    assert lines[0] == "view 'sweep 2026-12-02_06-47-57' in <your default entity>/p"
    assert "sweep=2026-12-02_06-47-57" in lines[1] and lines[-1] == "(not saved: --dry-run)"
    assert any(line.strip().startswith("line signal: test accuracy by loss: test/signal/acc") for line in lines)
    assert any(line.strip().startswith("line layer01: test accuracy by loss") for line in lines)
    assert len(lines) == 10 and max(map(len, lines)) < 150


def test_wandb_view_problems_are_one_line(tmp_path: Path) -> None:
    """No API key, a server that does not answer, a --from folder that does not exist: one line each, exit 1."""
    home = {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_API_KEY": ""}
    cases = {
        "no key": (home, ["--sweep", "s"], "error: no W&B API key for "),
        "no server": ({**home, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}, ["--sweep", "s"],
                      "error: the W&B server http://127.0.0.1:9 refused the connection"),  # port 9: nothing listens
        "no folder": (home, ["--sweep", "s", "--from", str(tmp_path / "nonexistent"), "--dry-run"],
                      f"error: --from {tmp_path / 'nonexistent'}: no such folder"),
    }
    for case, (env, args, start) in cases.items():
        result = script("wandb_view", "--project", "p", *args, cwd=tmp_path, env=env)
        assert result.returncode == 1, (case, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(start), (case, result.stderr)
