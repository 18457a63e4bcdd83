"""The published reports' figures (reports.paper_figures, reports.plots): what a reader of a paper
needs to see in them."""
import pytest


def test_published_bar_figure_keeps_its_title_inside_and_marks_empty_panels(tmp_path, monkeypatch):
    """A long title is wrapped to the figure's width (it was cut at both edges); bars far below the
    baseline get a log axis; a variant or a panel without runs says so."""
    from reports import plots

    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path, **kw: figs.append(fig))
    monkeypatch.setattr(plots.plt, "close", lambda fig: None)
    title = "socher (paper_socher): bars = mean, error bars = 95% t CI, dots = seeds, dashed = baseline"
    plots.bars_per_task({"adding T=100": ({"a": [1e-4, 2e-4, 1.5e-4], "b": []}, 0.167, "test/loss"),
                         "lm (ptb)": ({"a": [], "b": []}, None, "test/loss")}, tmp_path / "b.png", title)
    plots.bars_per_task({"treebank": ({"a": [0.42, 0.43]}, 0.23, "test/fine_root")}, tmp_path / "c.png", title)
    for fig in figs:
        fig.canvas.draw()
        box, inside = fig._suptitle.get_window_extent(), fig.bbox
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1
    two = figs[0].axes
    assert two[0].get_yscale() == "log"
    assert [t.get_text() for t in two[0].get_xticklabels()] == ["a", "b (no runs)"]
    assert any(t.get_text() == "no runs yet" for t in two[1].texts)
    # the claims file's reference, and only it, is orange
    from matplotlib.colors import to_rgb

    plots.bars_per_task({"t": ({"a": [1.0, 2.0], "b": [1.0, 2.0]}, None, "y")}, tmp_path / "d.png", title, {"b"})
    assert [to_rgb(p.get_facecolor()) for p in figs[-1].axes[0].patches] == [to_rgb("C0"), to_rgb("C1")]


def test_published_vs_T_figure_plots_loss_over_the_baseline_and_marks_all_diverged(monkeypatch, tmp_path):
    """copy's baseline falls with T, so raw means all sat on it; and a T where every run of a cell
    diverged used to vanish from the line without a sign."""
    from reports import paper_figures

    def run(cell, T, seed, loss, base, status="done"):
        return {"config": {"task": {"name": "copy", "T": T}, "model": {"cell": cell}, "seed": seed},
                "hash": f"{cell}{T}{seed}", "status": status, "metrics": {} if loss is None else {"test/loss": loss},
                "primary": "test/loss", "mode": "min", "baseline": {"test/loss": base}}

    runs = [run("lstm", 100, s, 0.1 + 0.01 * s, 0.2) for s in (0, 1)] + \
           [run("lstm", 200, s, 0.1, 0.1) for s in (0, 1)] + \
           [run("irnn", 100, s, 0.2, 0.2) for s in (0, 1)] + \
           [run("irnn", 200, s, None, 0.1, status="diverged") for s in (0, 1)]
    got = {}
    monkeypatch.setattr(paper_figures, "mean_vs_T", lambda series, lost, ylabel, path, title: got.update(
        series=series, lost=lost, ylabel=ylabel))
    paper_figures.plot_vs_T(runs, tmp_path / "vs_T.png", "t")
    assert got["series"] == {"irnn": [(100, pytest.approx(1.0))], "lstm": [(100, pytest.approx(0.525)), (200, pytest.approx(1.0))]}
    assert got["lost"] == {"irnn": [200], "lstm": []} and got["ylabel"] == "test/loss / baseline"
