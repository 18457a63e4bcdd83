"""The published reports' tables (reports.papers): what each column counts and says."""
from reports.published_runs import expected
from test_papers import _fake_store


def test_reduction_table_counts_every_file_of_the_full_sweep():
    """paper_jozefowicz is two files (+ _seeds.yaml): the Reduction table counts both, as 'k of n runs' does."""
    from reports.papers import sweep_summary
    from reports.published_runs import sweep_files

    s = sweep_summary(sweep_files("paper_jozefowicz"))
    assert s["runs"] == len(expected("paper_jozefowicz")) == 40
    assert s["seeds"] == list(range(10))


def test_results_time_column_never_in_e_notation_and_columns_explained(tmp_path):
    """Times of 100 s or more are whole seconds (was 1.34e+03 beside 70.5); the Results section explains its columns."""
    from reports.claims import load_claims
    from reports.papers import build, variant_row

    r = lambda s: {"config": {"seed": 0, "trainer": {"max_steps": 10}}, "status": "done",  # noqa: E731
                   "primary": "test/acc", "mode": "max", "metrics": {"test/acc": 0.5}, "wall_time_s": s}
    assert [variant_row("v", [r(s)], None, {}, {})[7] for s in (1341.4, 402.2, 70.54)] == ["1341", "402", "70.5"]
    _fake_store(tmp_path / "store", "paper_jozefowicz", lambda c: 0.01 + 0.001 * c.seed)
    text = build(load_claims("jozefowicz"), tmp_path / "store", tmp_path / "out").read_text()
    assert "Columns: n = " in text and "stopped when solved = " in text
    assert "Welch p vs ref" not in text.split("## Results")[1].split("Columns:")[1].split("\n")[0]   # no reference there
    _fake_store(tmp_path / "store2", "paper_ladder", lambda c: 0.01 + 0.001 * c.seed)
    text = build(load_claims("ladder"), tmp_path / "store2", tmp_path / "out2").read_text()
    assert "Welch p vs ref = " in text and "Holm p = " in text
