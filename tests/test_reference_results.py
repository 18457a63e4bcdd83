"""The raw results kept under reports/reference/ are valid stores, and the README's figures are theirs."""
from pathlib import Path

from bench.store import Store
from reports import stats

ROOT = Path(__file__).resolve().parents[1]


def test_ptb_sentence_vs_stream_figures_in_the_readme_are_the_stored_runs():
    store = Store(ROOT / "reports" / "reference" / "ptb_sentence_vs_stream")
    hashes = store.sweep_hashes("ptb_sentence_vs_stream")
    results = [store.result(h) for h in hashes]
    assert len(results) == 4 and all(r["status"] == "done" for r in results)
    ppl = {task: [r["metrics"]["test/ppl"] for r in results if r["task"] == task] for task in ("lm", "sentence_lm")}
    readme = (ROOT / "README.md").read_text()
    for task, shown in (("sentence_lm", "**119.70 ± 0.74**"), ("lm", "**112.66 ± 0.02**")):
        assert f"**{stats.mean(ppl[task]):.2f} ± {stats.std(ppl[task]):.2f}**" == shown and shown in readme
