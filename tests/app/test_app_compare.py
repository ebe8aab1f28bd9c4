"""experiments/compare.py on a real sweep: labels without the settings that do not change results,
means over seeds with a band, grouping by a config choice, and titles that fit their figure."""
from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from app_helpers import ROOT, TINY, load_compare, read_metrics, train_ok


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two losses x two seeds, one epoch each, with a setting that does not change results (threads)."""
    folder = tmp_path_factory.mktemp("compare")
    train_ok(["-m", "loss=v9,v15", "seed=0,1", "threads=1", "logger=none", *TINY, f"hydra.sweep.dir={folder / 'sweep'}"], folder)
    return folder / "sweep"


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_labels_leave_out_what_does_not_change_results(sweep: Path, tmp_path: Path) -> None:
    compare = load_compare()
    compare.main([str(sweep), "--out", str(tmp_path)])
    rows = table(tmp_path)
    assert [row["run"] for row in rows] == ["loss=v9 seed=0", "loss=v9 seed=1", "loss=v15 seed=0", "loss=v15 seed=1"]
    assert "threads" not in (tmp_path / "runs.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--average"], ["--group-by", "loss"]], ids=["average", "group-by"])
def test_seeds_averaged_with_a_band(flags: list[str], sweep: Path, tmp_path: Path) -> None:
    compare = load_compare()
    compare.main([str(sweep), "--out", str(tmp_path), *flags])
    rows = table(tmp_path)
    assert [(row["run"], row["runs"]) for row in rows] == [("loss=v9", "2"), ("loss=v15", "2")]
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    finals = [read_metrics(job)[-1]["test/acc"] for job in jobs]  # job order: v9 seed 0, v9 seed 1, v15 ...
    assert float(rows[0]["final test acc"]) == pytest.approx(statistics.fmean(finals[:2]))
    assert float(rows[1]["± (std)"]) == pytest.approx(statistics.stdev(finals[2:]))
    lines = compare.lines_of(compare.find_runs([sweep])[0], average="--average" in flags, group_by=flags[1:] or None)
    fig = compare.plot_test_accuracy(lines)
    bands = [c for c in fig.axes[0].collections if c.get_paths()]  # fill_between: one band per averaged line
    assert len(bands) == 2
    for png in ("layers.png", "test_acc.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_titles_fit_inside_the_figure(sweep: Path) -> None:
    """The single-run figure is the narrowest: its title and panel title must not be cut at either side."""
    compare = load_compare()
    (job,) = [p for p in sweep.iterdir() if p.name == "0"]
    for lines in (compare.lines_of(compare.find_runs([job])[0]), compare.lines_of(compare.find_runs([sweep])[0])):
        fig = compare.plot_layers(lines)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [fig.get_suptitle() and fig._suptitle] + [ax.title for ax in fig.axes if ax.get_visible()]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, text.get_text()


def copy_run(job: Path, dest: Path, overrides: list[str] | None = None, **summary: object) -> Path:
    """A copy of a real run folder, with other overrides or summary.json fields where given."""
    shutil.copytree(job, dest)
    if overrides is not None:
        (dest / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    if summary:
        record = json.loads((dest / "summary.json").read_text())
        (dest / "summary.json").write_text(json.dumps(record | summary))
    return dest


def compare_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python experiments/compare.py *args`` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "compare.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_damaged_and_failed_runs_are_listed_as_skipped_with_a_status_column(sweep: Path, tmp_path: Path) -> None:
    """Runs without metrics.jsonl, with a ``{bad`` line, an unparsable overrides.yaml or a null test/acc are skipped
    with one line each (no traceback); the others are compared, each with how it ended."""
    job = sweep / "0"
    runs = tmp_path / "runs"
    copy_run(job, runs / "a-finished")
    copy_run(job, runs / "b-interrupted", overrides=["loss=v9", "seed=0", "epochs=5"], status="interrupted")
    copy_run(job, runs / "c-bad-line")
    with open(runs / "c-bad-line" / "metrics.jsonl", "a") as f:
        f.write("{bad\n")
    copy_run(job, runs / "d-bad-overrides")
    (runs / "d-bad-overrides" / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    copy_run(job, runs / "e-null-acc")
    row = read_metrics(job)[-1] | {"test/acc": None}
    (runs / "e-null-acc" / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    copy_run(job, runs / "f-failed", status="failed", reason="download failed: no network")
    (runs / "f-failed" / "metrics.jsonl").unlink()

    result = compare_process(str(runs), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 4, result.stderr
    assert skipped[0].startswith(f"skipped {runs / 'c-bad-line'}: metrics.jsonl line 2: not JSON (")
    assert skipped[1] == f"skipped {runs / 'd-bad-overrides'}: .hydra/overrides.yaml: not readable YAML (expected ',' " \
        "or ']', but got '<stream end>' at line 2, column 1)"
    assert skipped[2].startswith(f"skipped {runs / 'e-null-acc'}: epoch 1 of metrics.jsonl: test/acc is null")
    assert skipped[3] == f"skipped {runs / 'f-failed'}: no finished epoch, no metrics.jsonl lines (failed: download failed: no network)"
    rows = table(tmp_path / "out")
    assert [r["status"] for r in rows] == ["finished", "interrupted"] and rows[1]["run"] == "epochs=5"
    text = (tmp_path / "out" / "runs.md").read_text()
    assert "Skipped (not compared):" in text and "download failed: no network" in text


@pytest.mark.slow
def test_labels_tell_runs_apart(sweep: Path, tmp_path: Path) -> None:
    """The app's defaults are labelled ``defaults``; runs of the same overrides are told apart by the device and
    the number of processes (``world_size`` of summary.json) or any other setting that differs."""
    job = sweep / "0"
    runs = tmp_path / "runs"
    copy_run(job, runs / "1", overrides=[])
    copy_run(job, runs / "2", overrides=["epochs=1"])
    copy_run(job, runs / "3", overrides=["epochs=1"], world_size=2)
    copy_run(job, runs / "4", overrides=["epochs=1", "device=cpu"])
    config = runs / "4" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("device: auto", "device: cpu"))
    compare = load_compare()
    lines = compare.lines_of(compare.find_runs([runs])[0])
    assert [line.label for line in lines] == [
        "defaults device=auto world_size=1", "epochs=1 device=auto world_size=1", "epochs=1 device=auto world_size=2",
        "epochs=1 device=cpu world_size=1"]
    alone = compare.lines_of(compare.find_runs([runs / "1"])[0])
    assert [line.label for line in alone] == ["defaults"]
    twins = compare.lines_of(compare.find_runs([runs / "2", sweep / "0"])[0])  # same settings: told apart by folder
    assert len({line.label for line in twins}) == 2


@pytest.mark.slow
def test_single_epoch_figures_have_integer_ticks_and_titles(sweep: Path) -> None:
    compare = load_compare()
    lines = compare.lines_of(compare.find_runs([sweep / "0"])[0])
    for fig in (compare.plot_layers(lines), compare.plot_test_accuracy(lines)):
        assert fig.get_suptitle()
        for ax in fig.axes:
            if ax.get_visible():
                low, high = ax.get_xlim()
                ticks = [t for t in ax.get_xticks() if low <= t <= high]
                assert 1 in ticks and all(t == int(t) for t in ticks), ticks


@pytest.mark.slow
def test_a_second_call_does_not_overwrite_the_first(sweep: Path, tmp_path: Path) -> None:
    runs = tmp_path / "job"
    copy_run(sweep / "0", runs)
    for expected in ("compare", "compare-2"):
        result = compare_process(str(runs), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"wrote {runs / expected / 'runs.md'}" in result.stdout
    first = (runs / "compare" / "runs.md").read_bytes()
    refused = compare_process(str(runs), "--out", str(runs / "compare"), cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == f"error: --out {runs / 'compare'}: holds an earlier comparison (runs.md, runs.csv, " \
        "layers.png, test_acc.png); give a new folder or remove it"
    assert (runs / "compare" / "runs.md").read_bytes() == first
    (tmp_path / "file").write_text("mine")
    refused = compare_process(str(runs), "--out", str(tmp_path / "file"), cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        f"error: --out {tmp_path / 'file'}: is a file; give a folder for the table and plots")
    assert (tmp_path / "file").read_text() == "mine"
