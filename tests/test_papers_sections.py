"""Report sections of the published comparisons that depend on what a claims file names: the
Reduction table without a reduced sweep, the evidence runs, the verdicts under corrections."""
import pytest


def test_reduction_table_has_one_column_when_a_claims_file_names_no_reduced_sweep():
    from reports.claims import load_claims
    from reports.doc import Doc
    from reports.papers import reduction_section

    both, only_full = Doc(), Doc()
    reduction_section(both, load_claims("jozefowicz"), False)
    reduction_section(only_full, load_claims("socher"), False)
    assert "| reduced (`paper_jozefowicz_cpu.yaml`) |" in both.markdown()
    text = only_full.markdown()
    assert "reduced (" not in text and "(there is no reduced version)" in text
    assert "| runs | 63 |\n" in text


def test_evidence_section_says_when_no_evidence_run_has_run(tmp_path):
    from reports.claims import load_claims
    from reports.doc import Doc
    from reports.evidence import evidence_section

    none, some = Doc(), Doc()
    evidence_section(none, load_claims("copy"), tmp_path)          # no `evidence`: no section
    evidence_section(some, load_claims("adding"), tmp_path)        # names paper_adding_long.yaml; empty store
    assert none.markdown().strip() == ""
    assert "`paper_adding_long.yaml`" in some.markdown() and "None of them has run yet." in some.markdown()


def test_verdicts_are_judged_again_under_holm_and_under_added_seeds():
    """paper_ladder_seeds.yaml added seeds 5-9 on adding T = 100 after seeds 0-4 gave p = 0.10
    and 0.48: + forget gate against + input agrees at p = 0.046 uncorrected, but neither at Pocock's
    0.0294 for two looks nor at Holm over the 12 claims. A 'not better' claim that does not agree
    (Greff's CIFG, significantly better at p = 0.039) becomes inconclusive, never 'agrees'. One
    claim tested once gets no section; a claims entry's `looks` counts."""
    from reports.claims import check_claim, load_claims
    from reports.doc import Doc
    from reports.looks import level, looks_section
    from reports.papers import ROOT, load_runs

    def section(name, pick=lambda c: c):
        claims = load_claims(name)
        runs = load_runs(ROOT / "reports" / "published" / name, f"paper_{name}")
        results = [(pick(c), check_claim(pick(c), runs, alpha=0.05)) for c in claims["claims"] if pick(c)]
        doc = Doc()
        looks_section(doc, claims, results, runs)
        return {c["id"]: r for c, r in results}, {ln.split(" | ")[0].strip("| "): ln for ln in doc.markdown().splitlines()
                               if ln.startswith("| ") and not ln.startswith(("| claim", "|:"))}

    assert (level(2, 0.05), level(3, 0.05), level(6, 0.05), level(2, 0.01)) == (0.0294, 0.0221, 0.05 / 6, 0.005)
    results, rows = section("ladder")
    assert len(rows) == 12 and results["forget_adding_T100"]["verdict"] == "agrees"
    assert rows["forget_adding_T100"] == ("| forget_adding_T100 | 0.0458 | 0.338 | **inconclusive** (uncorrected: agrees) | "
                                          "2: `paper_ladder.yaml`, `paper_ladder_seeds.yaml` | 0.0294 | **inconclusive** "
                                          "(uncorrected: agrees) | 0.01402 |")
    assert rows["input_copy_T100"].endswith("| **agrees** (unchanged) | 1 | — | — | 0.007937 |")   # 5 vs 5, all apart
    _, greff = section("greff")
    assert "| 0.03875 | 0.4262 | **inconclusive** (uncorrected: does not agree) |" in greff["cifg_not_better_adding"]
    assert "| **agrees** (unchanged) |" in greff["cifg_adding"]    # 'not worse', significantly better: still not worse
    _, one = section("orthinit", lambda c: c if c["id"] == "copy_better_T100" else None)
    assert one == {}
    _, said = section("ladder", lambda c: dict(c, looks=3) if c["id"] == "forget_copy_T100" else None)
    assert said["forget_copy_T100"].endswith("| 0.009648 | **does not agree** (unchanged) | 3: `paper_ladder.yaml` | 0.0221 | **does not agree** (unchanged) | 0.007937 |")


def test_mann_whitney_is_the_exact_rank_test():
    """5 against 5, every value of one side below every other: 2 / C(10, 5) = 0.00794, the table's
    figure; fully interleaved: 1; no test on one value a side or all values equal."""
    from reports.stats import mann_whitney

    assert round(mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]), 6) == round(2 / 252, 6)
    assert mann_whitney([1, 4, 5, 8], [2, 3, 6, 7]) == 1.0
    assert mann_whitney([1], [2, 3]) is None and mann_whitney([1, 1], [1, 1]) is None


@pytest.mark.parametrize("bad", [0, -1, 2.5, "two", True, None])
def test_a_claims_looks_must_be_a_positive_integer(bad):
    from bench.schema import ConfigError
    from reports.looks import claimed_looks

    assert claimed_looks({"id": "x"}) == 1 and claimed_looks({"id": "x", "looks": 3}) == 3
    with pytest.raises(ConfigError) as e:
        claimed_looks({"id": "x", "looks": bad})
    assert str(e.value) == f"claim x: looks: {bad!r}; allowed: an integer >= 1"


def test_seeds_needed_is_the_two_sample_power_calculation():
    """Two-sided test at 0.05, equal spreads: 80 % power at an effect of 1 sd needs 17 a side, at
    0.5 sd 64 (the textbook figures); no difference, or one too small, gives None."""
    from reports.settle import power, seeds_needed

    assert (seeds_needed(1, 1, 1), seeds_needed(-0.5, 1, 1)) == (17, 64)
    assert seeds_needed(0, 1, 1) is None and seeds_needed(1e-6, 1, 1) is None
    assert power(1, 1, 1, 16, 0.05) < 0.8 <= power(1, 1, 1, 17, 0.05)


def test_seeds_needed_within_a_margin_is_the_non_inferiority_calculation():
    """One-sided at 0.025, the true difference 1 sd inside the margin: 17 a side, as the two-sided
    test at 1 sd; 0.5 sd inside: 64; a difference at or past the margin cannot be shown within it."""
    from reports.settle import power_within, seeds_needed

    assert (seeds_needed(0, 1, 1, within=1), seeds_needed(0.3, 1, 1, within=0.5)) == (17, 64)
    assert seeds_needed(0.2, 1, 1, within=0) is None and seeds_needed(2, 1, 1, within=-1) is None
    assert power_within(1, 1, 1, 16, 0.05) < 0.8 <= power_within(1, 1, 1, 17, 0.05)


def test_the_settle_table_lists_a_claim_not_shown_within_its_margin():
    from reports.claims import check_claim
    from reports.doc import Doc
    from reports.settle import settle_section
    from test_papers import run

    ref = [run("lstm_vanilla", 0.10 + 0.01 * (i % 3), seed=i) for i in range(3)]
    same = [run("lstm_nfg", 0.105 + 0.01 * (i % 3), seed=i) for i in range(3)]
    c = {"id": "np", "kind": "not_worse_than_ref", "select": {"model.cell": "lstm_nfg"},
         "ref": {"model.cell": "lstm_vanilla"}, "task": {"task.name": "copy"}, "margin": 0.3}
    for x in ref + same:
        x.update(hash=f"{x['config']['model']['cell']}{x['config']['seed']}", wall_time_s=36.0)
    r = check_claim(c, ref + same)
    assert r["verdict"] == "inconclusive" and "not shown within the margin" in r["why"]
    doc = Doc()
    settle_section(doc, {"alpha": 0.05, "full": "paper_greff.yaml", "claims": [c]}, [(c, r)], ref + same)
    row = [ln for ln in doc.markdown().splitlines() if ln.startswith("| np ")]
    # difference 0.005, margin 0.3 x (0.17 - 0.11) = 0.018, sd 0.01 a side: 11 a side (8 + 8 runs of 36 s)
    assert row == ["| np | 0.005 | 0.018 | 0.01 / 0.01 | 3 / 3 | 0.05 | 11 | 16 | 0.2 |"]
    past = [{**x, "metrics": {"test/loss": 0.105 + 0.03 * (x["config"]["seed"] % 3)}} for x in same]   # 0.025 worse
    r = check_claim(c, ref + past)
    assert r["verdict"] == "inconclusive" and "not shown within the margin" in r["why"]
    doc = Doc()
    settle_section(doc, {"alpha": 0.05, "full": "paper_greff.yaml", "claims": [c]}, [(c, r)], ref + past)
    assert [ln for ln in doc.markdown().splitlines() if ln.startswith("| np ")] == \
        ["| np | 0.025 | 0.018 | 0.03 / 0.01 | 3 / 3 | 0.05 | never | — | — |"]


def test_the_settle_table_lists_claims_inconclusive_for_want_of_significance_only():
    from reports.claims import check_claim, load_claims
    from reports.doc import Doc
    from reports.papers import ROOT, load_runs
    from reports.settle import settle_section

    claims = load_claims("ladder")
    runs = load_runs(ROOT / "reports" / "published" / "ladder", "paper_ladder")
    results = [(c, check_claim(c, runs, alpha=0.05)) for c in claims["claims"]]
    doc = Doc()
    settle_section(doc, claims, results, runs)
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in doc.markdown().splitlines() if ln.startswith("| ")
            and not ln.startswith(("| claim", "|:"))}
    # neither-learnt claims (input_adding_T100, ...) and verdicts that settled are not listed
    assert set(rows) == {"output_adding_T100", "forget_copy_T200"}   # output_copy_T200 settled at 17 seeds
    assert rows["forget_copy_T200"].endswith("| 17 / 17 | 0.0294 | 115 | 196 | 17.5 |")   # two looks: Pocock
    empty = Doc()
    settle_section(empty, claims, [(c, r) for c, r in results if r["verdict"] != "inconclusive"], runs)
    assert empty.markdown().strip() == ""
