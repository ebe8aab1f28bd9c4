"""experiments/compare.py on a real sweep: labels without the settings that do not change results,
means over seeds with a band, grouping by a config choice, and titles that fit their figure."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from app_helpers import TINY, load_compare, read_metrics, train_ok


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
    lines = compare.lines_of(compare.find_runs([sweep]), average="--average" in flags, group_by=flags[1:] or None)
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
    for lines in (compare.lines_of(compare.find_runs([job])), compare.lines_of(compare.find_runs([sweep]))):
        fig = compare.plot_layers(lines)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [fig.get_suptitle() and fig._suptitle] + [ax.title for ax in fig.axes if ax.get_visible()]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, text.get_text()
