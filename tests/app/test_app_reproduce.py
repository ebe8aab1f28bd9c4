"""The reproduction tables: every row's preset builds and trains a batch with its dataset's shapes, and
``experiments/reproduce.py`` runs a row over two seeds and writes the table, its JSON and the curves."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from app_helpers import compose_config, load_dataset, load_script, read_metrics
from test_app_configs import train_one_batch
from torchvision.transforms.v2.functional import resize

from sigprop.data.datasets import CIFAR100, STL10, SVHN, ImageData
from sigprop.engine import checks, rundir
from sigprop.engine.rundir import choices_of


reproduce = load_script("reproduce")
ROWS = [row for rows in reproduce.TABLES.values() for row in rows]


def test_every_table_has_every_method_and_one_command_per_row() -> None:
    assert set(reproduce.TABLES) == {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "stl10"}
    for table, rows in reproduce.TABLES.items():
        names = [row.name for row in rows]
        assert len(names) == len(set(names)), table
        for network in {row.network for row in rows}:
            methods = {(row.method, row.loss) for row in rows if row.network == network and not row.note}
            assert methods == {("sigprop", "v9"), ("sigprop", "v14"), ("sigprop", "v15"), ("backprop", None), ("fixed", None)}
    for row in ROWS:
        command = row.command()
        assert command.startswith("python train.py experiment=") and "seed=" not in command
        assert not any(o.startswith(("threads", "hydra.", "logger")) for o in row.overrides)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.table}/{r.name}" for r in ROWS])
def test_row_composes_into_its_recipe(row: object) -> None:
    """Every row's command composes and names its dataset, network and method; the repro presets hold out a
    validation split, the reference recipe trains on all of CIFAR-10; the CPU rows use the per-class signal
    where it is exact (no batch statistics, no dropout)."""
    cfg = compose_config(list(row.overrides))
    choices = choices_of(cfg)
    checks.check_config(cfg, choices)
    assert choices["dataset"] == ("cifar10_jpeg" if row.dataset == "cifar10" else row.dataset)
    assert cfg.model._target_.endswith({"mlp": "mlp", "cnn": "cnn"}.get(row.network, "vgg"))
    assert rundir.method_of(choices) == row.method
    if row.method == "sigprop":
        assert choices["loss"] == row.loss
    cpu_row = row.dataset in ("mnist", "fashion_mnist") or row.note == "cpu"
    if row.dataset == "cifar10" and not cpu_row:
        assert cfg.dataset.val_size is None and cfg.epochs in (400, 50)
    else:
        assert cfg.dataset.val_size >= 500
    if cpu_row:
        assert cfg.signal.per_class == (cfg.model.norm != "batch" and cfg.model.dropout == 0)


def shaped_like(data: ImageData, dataset: type, size: int) -> ImageData:
    """Real CIFAR-10 images at another dataset's size and class count, to build and step its networks."""
    images = resize(data.train_images, [size, size], antialias=True) if size != 32 else data.train_images
    return ImageData(dataset.key, images, data.train_labels, images[:20], data.train_labels[:20],
                     dataset.num_classes, data.mean, data.std, None)


@pytest.mark.parametrize("preset,dataset,size", [("repro_cifar100", CIFAR100, 32), ("repro_svhn", SVHN, 32), ("repro_stl10", STL10, 96)])
def test_gpu_presets_build_and_train_a_batch_with_their_shapes(preset: str, dataset: type, size: int, cifar_tree: Path) -> None:
    """CIFAR-100, SVHN and STL-10 are not on the test machine: their presets' networks are built for their
    image size and class count and take a training step on real CIFAR-10 images of that size (narrow
    widths, so that a CPU step is quick)."""
    cifar = load_dataset(compose_config(["dataset=cifar10_jpeg", f"data_dir={cifar_tree}"]))
    for method in ("propagator=loss", "propagator=backprop"):
        cfg = compose_config([f"experiment={preset}", method, "model.feat_mult=0.0625", "model.num_hidden=32"])
        step, changed = train_one_batch(cfg, shaped_like(cifar, dataset, size))
        assert any(changed.values())
        assert step.model.model[-1].module.out_features == dataset.num_classes


def test_cifar10_rows_train_a_batch_on_the_jpeg_copy(cifar_tree: Path) -> None:
    """The CIFAR-10 rows (the reference recipe, the 10-minute GPU run in bf16 with channels-last and h and t
    in one call, torch.compile left out on the CPU; the CPU rows) build and step on real CIFAR-10 images (a
    validation split that fits the test's 200 images)."""
    for row in reproduce.TABLES["cifar10"]:
        if row.method == "fixed":
            continue
        overrides = [o for o in row.overrides if o != "step.compile=true"]
        small = [f"data_dir={cifar_tree}", "model.feat_mult=0.0625", "model.num_hidden=32", "dataset.val_size=null"]
        cfg = compose_config([*overrides, *small])
        data = load_dataset(cfg)
        _, changed = train_one_batch(cfg, data)
        assert any(changed.values()), row.name


def test_reproduce_runs_a_row_over_two_seeds_and_writes_the_table(tmp_path: Path) -> None:
    """One row, two seeds, two epochs on 1,000 real embedded-MNIST images (100 more held out): the runs, the JSON
    rows, the Markdown table and the curves; a second call finds the runs finished and trains nothing."""
    out, report, results, plots = tmp_path / "runs", tmp_path / "REPRODUCTION.md", tmp_path / "reproduction.json", tmp_path / "plots"
    shrink = ["dataset=embedded", "dataset.train_subset=1100", "dataset.test_subset=300", "dataset.val_size=100",
              "model.num_hidden=64", "batch_size=50", "optimizer.lr=2e-3", "epochs=2", "scheduler.milestones=[2]",
              "test_batch_size=300"]
    args = ["mnist", "--rows", "mlp-sigprop-v15", "--seeds", "0", "1", "--out", str(out), "--logger", "none",
            "--report", str(report), "--results", str(results), "--plots", str(plots), "--set", *shrink]
    (out / "mnist" / "mlp-sigprop-v15" / "seed1").mkdir(parents=True)  # an unfinished run's folder: set aside, run again
    assert reproduce.main(args) == 0

    rows = json.loads(results.read_text())
    assert [r["row"] for r in rows] == [row.name for row in ROWS]
    for r in rows:
        assert {"table", "dataset", "network", "method", "loss", "command", "seeds"} <= set(r)
        assert r["command"].startswith("python train.py experiment=") and "seed=" not in r["command"]
    (done,) = [r for r in rows if r["seeds"]]
    assert (done["table"], done["dataset"], done["network"], done["method"], done["loss"]) == ("mnist", "mnist", "mlp", "sigprop", "v15")
    assert done["command"] == "python train.py experiment=repro_mnist_mlp propagator=loss loss=v15 " + " ".join(
        f"'{o}'" if "[" in o else o for o in shrink)
    assert set(done["seeds"]) == {"0", "1"}
    histories = [read_metrics(out / "mnist" / "mlp-sigprop-v15" / f"seed{seed}") for seed in (0, 1)]
    assert histories[0][-1]["test/loss"] != histories[1][-1]["test/loss"]  # two seeds, two runs
    for seed in (0, 1):
        folder = out / "mnist" / "mlp-sigprop-v15" / f"seed{seed}"
        history = histories[seed]
        summary = json.loads((folder / "summary.json").read_text())
        best = max(history, key=lambda row: (row["val/acc"], -row["epoch"]))  # the epoch validation picks
        assert summary["best/epoch"] == best["epoch"] == done["best_val_epoch"][str(seed)]
        assert summary["best/test/acc"] == best["test/acc"] == done["test_acc_at_best_val"][str(seed)]
        assert done["seeds"][str(seed)] == history[-1]["test/acc"] == summary["final/test/acc"] > 0.2  # chance: 0.1
    # compare.py picks the same best epoch as the run's summary.
    load_script("compare").main([str(folder), "--out", str(tmp_path / "compare")])
    with open(tmp_path / "compare" / "runs.csv") as f:
        (compared,) = list(csv.DictReader(f))
    assert int(compared["best epoch"]) == summary["best/epoch"]
    assert float(compared["test acc at best epoch"]) == pytest.approx(summary["best/test/acc"])
    assert (out / "mnist" / "mlp-sigprop-v15" / "seed1.partial1").is_dir()
    assert done["epochs"] == 2 and done["s_per_epoch"] > 0 and "CPU" in done["machine"]

    text = report.read_text()
    line = next(line for line in text.splitlines() if "loss=v15 dataset=embedded" in line and "| mlp |" in line)
    mean = 100 * (done["seeds"]["0"] + done["seeds"]["1"]) / 2
    assert line.startswith(f"| mlp | sigprop | v15 | {mean:.2f} ± ")
    assert text.count("| not run |") == len(ROWS) - 1
    assert "`python train.py experiment=repro_cifar100 propagator=backprop`" in text
    for png in ("mnist-mlp-layers.png", "mnist-mlp-test_acc.png"):
        assert (plots / png).read_bytes().startswith(b"\x89PNG") and f"]({Path('plots') / png})" in text

    before = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert reproduce.main(args) == 0  # everything finished: nothing trains again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == before
    assert json.loads(results.read_text()) == rows


TRACKED = (reproduce.REPORT, reproduce.RESULTS, *sorted(reproduce.PLOTS.glob("*.png")))


def test_report_goes_to_the_users_folder_unless_recorded(tmp_path: Path) -> None:
    """By default the report, its JSON and its curves go to --out; the tracked files change only with --record."""
    before = {path: path.read_bytes() for path in TRACKED}
    out = tmp_path / "mine"
    assert reproduce.main(["--report-only", "--out", str(out), "--logger", "none"]) == 0
    assert {path: path.read_bytes() for path in TRACKED} == before
    assert (out / "REPRODUCTION.md").is_file() and (out / "reproduction.json").is_file()
    assert len(json.loads((out / "reproduction.json").read_text())) == len(ROWS)


def test_curves_are_not_redrawn_without_every_recorded_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A table recorded over several rows, of which one has run folders here: its recorded curves stay as they
    are (drawn again they would hold that row alone), and the report says so; with no row recorded elsewhere the
    curves are drawn from the runs here."""
    plots = tmp_path / "plots"
    shutil.copytree(reproduce.PLOTS, plots)
    before = {p.name: p.read_bytes() for p in plots.glob("fashion_mnist-mlp-*.png")}
    rows = [row for row in reproduce.TABLES["fashion_mnist"] if row.network == "mlp"]
    here = reproduce.Run(rows[0], 0, tmp_path / "runs" / "seed0", summary={"status": "finished"})
    kept = reproduce.plot_table("fashion_mnist", [here], plots, gone=[r.name for r in rows[1:]])
    assert [p.name for p in kept] == sorted(before) and {p.name: p.read_bytes() for p in kept} == before
    names = ", ".join(r.name for r in rows[1:])
    assert f"not redrawn: fashion_mnist-mlp curves: no run folders here for {names} (recorded before)" in capsys.readouterr().err


@pytest.mark.parametrize("tables", [[], ["fashion_mnist"]], ids=["every table", "one table"])
def test_report_only_on_a_fresh_clone_keeps_the_recorded_figures_and_their_links(tmp_path: Path, tables: list[str]) -> None:
    """No run folders (a fresh clone): --record --report-only keeps every recorded row and every figure link, in
    their order, whether it redraws every table's curves or one table's (the others' are kept)."""
    exp = tmp_path / "experiments"
    shutil.copytree(reproduce.PLOTS, exp / "results" / "reproduction")
    shutil.copy(reproduce.RESULTS, exp / "results" / "reproduction.json")
    report = exp / "REPRODUCTION.md"
    args = [*tables, "--report-only", "--record", "--out", str(tmp_path / "outputs" / "reproduce"), "--report", str(report),
            "--results", str(exp / "results" / "reproduction.json"), "--plots", str(exp / "results" / "reproduction")]
    assert reproduce.main(args) == 0
    links = [line for line in reproduce.REPORT.read_text().splitlines() if line.startswith("![")]
    assert links and [line for line in report.read_text().splitlines() if line.startswith("![")] == links
    rewritten = {(r["table"], r["row"]): r for r in json.loads((exp / "results" / "reproduction.json").read_text())}
    measured = [r for r in json.loads(reproduce.RESULTS.read_text()) if r["seeds"]]
    assert measured and all(rewritten[(r["table"], r["row"])] == r for r in measured)


def test_a_seed_setting_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["mnist", "--rows", "mlp-sigprop-v15", "--seeds", "0", "1", "--out", str(tmp_path), "--set", "seed=5"])
    assert stop.value.code == 2 and not (tmp_path / "mnist").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        ": error: --set seed=5: the seeds come from --seeds (e.g. --seeds 5), one run each")


def test_dry_run_estimates_the_time_and_names_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The estimate comes from the recorded seconds per epoch; a dataset absent from data_dir is named with the
    command that puts it there."""
    recorded = {r["row"]: r for r in json.loads(reproduce.RESULTS.read_text()) if r["table"] == "mnist"}
    seconds = recorded["mlp-sigprop-v15"]["s_per_epoch"] * recorded["mlp-sigprop-v15"]["epochs"] * 2
    args = ["mnist", "--rows", "mlp-sigprop-v15", "--seeds", "0", "1", "--out", str(tmp_path / "runs"), "--dry-run",
            "--jobs", "1", "--set", f"data_dir={tmp_path / 'empty'}"]
    assert reproduce.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.startswith("[to run] python train.py experiment=repro_mnist_mlp") for line in lines[:2]] == [True, True]
    assert lines[2].startswith(f"estimate: 2 runs to train, about {reproduce.duration(seconds)} of training in all, "
                               f"about {reproduce.duration(seconds)} with 1 at a time (the s/epoch recorded in ")
    assert lines[3].startswith(f"warning: dataset mnist: not found in {tmp_path / 'empty' / 'MNIST' / 'raw'} (not "
                               "downloaded yet: a run downloads it, and fails offline); put ")
    assert "python -m sigprop.data.prepare mnist --source DIR" in lines[3] and len(lines) == 4
    assert not (tmp_path / "runs").exists()
