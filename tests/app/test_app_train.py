"""train.py as a user runs it: sweeps with W&B offline, resume, determinism, config errors, the README command."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from app_helpers import TINY, load_compare, read_metrics, train, train_ok, wandb_records, without_timing

from sigprop.engine.summary import summarize

RUN_FILES = ("metrics.jsonl", "checkpoint.pt", "summary.json", "wandb")


def test_sweep_writes_one_run_per_job_with_offline_wandb(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # Overrides on both sides of -m, as in the README's `python train.py signal=projection loss=v9 -m epochs=3`;
    # settings that do not change results (threads, tags, step.mode) stay out of the run names.
    result = train_ok(["loss=v9,v15", "-m", "logger=wandb", *TINY, "seed=0", "threads=1", "logger.tags=[mine]",
                       "step.mode=layerwise", f"hydra.sweep.dir={sweep}"], tmp_path)
    # One closing line: how many jobs finished and where the results are.
    closing = result.stdout.strip().splitlines()[-1]
    assert closing.endswith(f"sweep done: 2 of 2 jobs finished; results in {sweep} (python experiments/compare.py {sweep})")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    sweep_id = f"{tmp_path.name}_sweep"  # the sweep folder's last two parts
    for job, loss in zip(jobs, ("v9", "v15"), strict=True):
        assert (job / ".hydra" / "overrides.yaml").read_text().count(f"loss={loss}") == 1
        (row,) = read_metrics(job)
        for key in ("epoch", "lr", "train/acc", "test/acc", "train/samples_per_s",
                    "train/signal/acc", "train/layer01/acc", "test/layer01/loss", "test/signal/acc"):
            assert key in row and math.isfinite(row[key]), key
        assert row["test/acc"] > 0.2  # 1,000 real images, one epoch: above chance (0.1)

        records = wandb_records(job)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        name = run.display_name.split(",")  # named after what changes results, sorted as Hydra's override_dirname
        assert name == sorted(name) and f"loss={loss}" in name and "seed=0" in name and len(name) == len(TINY) + 2
        assert not any(item.startswith(("threads", "logger", "step.", "hydra")) for item in name)
        assert run.run_group == ",".join(n for n in name if n != "seed=0")  # the seeds of one configuration share it
        assert run.job_type == "sigprop"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["world_size"] in (1, {"value": 1}) and json.loads((job / "summary.json").read_text())["world_size"] == 1
        assert list(run.tags) == ["mine", "dataset=embedded", "model=mlp_small", "propagator=loss",
                                  "signal=projection", f"loss={loss}", "optimizer=adam", f"sweep={sweep_id}"]
        # One history row per epoch (the layers table goes to the summary), and the best values declared.
        assert sum(r.WhichOneof("record_type") == "history" for r in records) == 1
        defined = {r.metric.name: r.metric for r in records if r.WhichOneof("record_type") == "metric"}
        assert defined["test/acc"].step_metric == "epoch" and defined["test/acc"].summary.max
        assert defined["test/layer01/loss"].summary.min and not defined["lr"].summary.max
        summary = {u.key or "/".join(u.nested_key): u.value_json for r in records
                   if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
        assert json.loads(summary["best/test/acc"]) == row["test/acc"]
        assert json.loads(summary["layers"])["_type"] == "table-file"

    # The comparison tool reads the sweep back: one row per job, labelled by what differs, and the plots.
    compare = load_compare()
    compare.main([str(sweep), "--out", str(tmp_path / "compare")])
    with open(tmp_path / "compare" / "runs.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["run"] for row in table] == ["loss=v9", "loss=v15"]
    assert [float(row["final test acc"]) for row in table] == [read_metrics(j)[-1]["test/acc"] for j in jobs]
    for png in ("layers.png", "test_acc.png"):
        assert (tmp_path / "compare" / png).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_resume_gives_the_metrics_of_an_uninterrupted_run(tmp_path: Path) -> None:
    # Dropout and the embedded set's random crops use the torch and data-order random streams,
    # so an exact match needs every random state restored.
    args = [*TINY, "epochs=2", "model.dropout=0.1", "logger=none"]
    train_ok([*args, f"hydra.run.dir={tmp_path / 'full'}"], tmp_path)
    train_ok([*args, "epochs=1", f"hydra.run.dir={tmp_path / 'first'}"], tmp_path)
    train_ok([*args, f"resume={tmp_path / 'first'}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert [row["epoch"] for row in resumed] == [1, 2]
    assert without_timing(resumed) == without_timing(full)
    assert (tmp_path / "first" / "metrics.jsonl").read_text().count("\n") == 1  # the first run is left as it was


def test_resume_of_a_sweep_job_takes_its_settings_from_its_folder(tmp_path: Path) -> None:
    """``resume=<job folder> epochs=N`` alone continues that job with its own overrides (its
    ``.hydra/overrides.yaml``), to the metrics of an uninterrupted run; a setting that would change it is refused
    in one line naming it, before anything is written."""
    args = [*TINY, "model.dropout=0.1", "logger=none"]
    sweep = tmp_path / "sweep"
    train_ok(["-m", *args, "loss=v9,v15", f"hydra.sweep.dir={sweep}"], tmp_path)
    train_ok([*args, "loss=v9", "epochs=2", f"hydra.run.dir={tmp_path / 'full'}"], tmp_path)
    train_ok([f"resume={sweep / '0'}", "epochs=2", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert [row["epoch"] for row in resumed] == [1, 2] and without_timing(resumed) == without_timing(full)
    # The new folder records the settings it ran with, so it can itself be resumed the same way.
    assert "loss=v9" in (tmp_path / "resumed" / ".hydra" / "overrides.yaml").read_text()

    refused = tmp_path / "refused"
    result = train([f"resume={sweep / '0'}", "epochs=2", "loss=v15", f"hydra.run.dir={refused}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: resume={sweep / '0'} continues that run") and "loss=v15 would change" in line, line
    assert not refused.exists()


@pytest.mark.slow
def test_same_command_twice_gives_the_same_metrics(tmp_path: Path) -> None:
    args = [*TINY, "epochs=2", "logger=none", "signal=context", "loss=v9"]
    train_ok([*args, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    train_ok([*args, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert len(a) == 2 and without_timing(a) == without_timing(b)
    assert a[1]["train/acc"] != a[0]["train/acc"]  # it trained


slow = pytest.mark.slow
BAD = {  # the quick check keeps one error of each kind: composition, building, and a sweep's last job
    "unknown option": (["loss=v99"], "loss/v99", slow),
    "wrong type": (["epochs=abc"], "epochs=abc: Value 'abc'", ()),
    "unknown key": (["learning_rate=0.1"], "learning_rate", slow),
    "unknown key in a group": (["model.width=3"], "model.width", slow),
    "setting its target rejects": (["+model.width=3"], "model=mlp_small", slow),
    "signal that does not fit the data": (["signal=draw", "signal.places=1000"], "signal=draw", ()),
    "loss that does not fit the signal": (["loss=v1"], "signal.per_class=true", slow),  # v1: one signal row per class
    "bad type in a sweep": (["-m", "loss=v9,v15", "batch_size=64,many"], "batch_size=many: Value 'many'", slow),
    "bad choice in a sweep's last job": (["-m", "loss=v9,v1"], "(in the sweep's job", ()),  # v1 needs signal.per_class
}


@pytest.mark.parametrize(
    "overrides,names", [pytest.param(o, n, marks=m, id=k) for k, (o, n, m) in BAD.items()]
)
def test_bad_config_stops_with_one_line_before_writing_run_files(overrides: list[str], names: str, tmp_path: Path) -> None:
    run_dir, sweep = tmp_path / "run", tmp_path / "sweep"
    flags = [o for o in overrides if o.startswith("-")]  # before the overrides; the bad values after TINY's
    settings = [o for o in overrides if not o.startswith("-")]
    result = train([*flags, *TINY, *settings, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], result.stderr
    written = [p.name for folder in (run_dir, sweep) if folder.exists() for p in folder.rglob("*")]
    assert not set(written) & (set(RUN_FILES) - {"summary.json"}), written
    # A check that needs the data runs in the folder Hydra created: its record says why the run stopped.
    for record in (p for folder in (run_dir, sweep) if folder.exists() for p in folder.rglob("summary.json")):
        summary = json.loads(record.read_text())
        assert summary["status"] == "failed" and summary["last_epoch"] == 0 and names in summary["reason"], summary
    assert not (sweep / "0").exists()  # a sweep stops before its first job


@pytest.mark.slow
def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_ok([*TINY, "logger=none", f"hydra.run.dir={run_dir}"], tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = train([*TINY, "logger=none", "seed=1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode != 0 and "already holds a run" in result.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # .hydra/ and train.log too


@pytest.mark.slow
def test_readme_command_trains_the_default_network(tmp_path: Path) -> None:
    """``python train.py`` (here one epoch of its twenty): the default network on the embedded MNIST subset,
    with one start line and, asked for, the composed config printed once."""
    result = train_ok(["epochs=1", "print_config=true", "hydra.run.dir=run"], tmp_path, timeout=600)
    assert "final test accuracy" in result.stdout
    (start,) = [line for line in result.stdout.splitlines() if "] - start: " in line]
    assert "model=mlp_small, propagator=loss, step.mode=fused on cpu" in start
    assert "1,880,074 parameters (1,869,824 local, 10,250 global); embedded: 10,000 train / 10,000 test" in start
    assert start.endswith(f"run folder {tmp_path / 'run'}")
    assert result.stdout.count("config:\n") == 1 and result.stdout.count("\nstep:\n  mode: fused\n") == 1
    (row,) = read_metrics(tmp_path / "run")
    assert row["test/acc"] > 0.85  # one epoch on 10,000 images
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_summary_takes_the_best_epoch_from_the_validation_split() -> None:
    """best/* is the epoch of the highest validation accuracy (the earliest on ties), every value of it; without a
    validation split, the epoch of the highest test accuracy."""
    rows = [
        {"epoch": 1, "lr": 1e-3, "val/acc": 0.90, "test/acc": 0.91, "test/layer01/acc": 0.80, "train/loss": 0.5},
        {"epoch": 2, "lr": 1e-3, "val/acc": 0.95, "test/acc": 0.93, "test/layer01/acc": 0.85, "train/loss": 0.4},
        {"epoch": 3, "lr": 1e-4, "val/acc": 0.95, "test/acc": 0.96, "test/layer01/acc": 0.84, "train/loss": 0.3},
    ]
    summary = summarize(rows)
    assert (summary["best/epoch"], summary["best/val/acc"], summary["best/test/acc"]) == (2, 0.95, 0.93)
    assert (summary["best/test/layer01/acc"], summary["best/train/loss"]) == (0.85, 0.4)  # epoch 2's, not each maximum
    assert (summary["final/test/acc"], summary["epochs"]) == (0.96, 3)
    without_val = summarize([{k: v for k, v in row.items() if not k.startswith("val/")} for row in rows])
    assert (without_val["best/epoch"], without_val["best/test/acc"]) == (3, 0.96)
    assert "best/val/acc" not in without_val
