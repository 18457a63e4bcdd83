"""Report sections of the published comparisons that depend on what a claims file names: the
Reduction table without a reduced sweep, the evidence runs."""


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


def test_seeds_added_after_a_look_are_set_against_a_corrected_level():
    """paper_ladder_seeds.yaml added seeds 5-9 on adding T = 100 after seeds 0-4 gave p = 0.10
    and 0.48: + forget gate against + input agrees at p = 0.046 uncorrected, but not at Pocock's
    0.0294 for two looks; claims whose sides come from one file each get no row, unless the claims
    entry says `looks`."""
    from reports.claims import check_claim, load_claims
    from reports.doc import Doc
    from reports.looks import level, looks_section
    from reports.papers import ROOT, load_runs

    assert (level(2, 0.05), level(3, 0.05), level(6, 0.05), level(2, 0.01)) == (0.0294, 0.0221, 0.05 / 6, 0.005)
    claims = load_claims("ladder")
    runs = load_runs(ROOT / "reports" / "published" / "ladder", "paper_ladder")
    results = [(c, check_claim(c, runs, alpha=0.05)) for c in claims["claims"]]
    doc = Doc()
    looks_section(doc, claims, results, runs)
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in doc.markdown().splitlines() if ln.startswith("| ") and "_T" in ln}
    assert set(rows) == {"input_adding_T100", "forget_adding_T100", "output_adding_T100"}   # the seeds file's claims only
    assert next(r for c, r in results if c["id"] == "forget_adding_T100")["verdict"] == "agrees"   # uncorrected
    forget = rows["forget_adding_T100"]
    assert forget.endswith("| `paper_ladder.yaml`, `paper_ladder_seeds.yaml` | 2 | 0.0458 | 0.0294 | **inconclusive** (uncorrected: agrees) |")
    assert rows["output_adding_T100"].endswith("| 0.2181 | 0.0294 | **inconclusive** (unchanged) |")
    orth = load_claims("orthinit")                     # one sweep file: no section
    orth_runs = load_runs(ROOT / "reports" / "published" / "orthinit", "paper_orthinit")
    none = Doc()
    looks_section(none, orth, [(c, check_claim(c, orth_runs, alpha=0.05)) for c in orth["claims"]], orth_runs)
    assert orth_runs and none.markdown().strip() == ""
    said = [dict(c, looks=3) for c in claims["claims"] if c["id"] == "forget_copy_T100"]   # one file, `looks: 3`
    three = Doc()
    looks_section(three, claims, [(c, check_claim(c, runs, alpha=0.05)) for c in said], runs)
    assert "| forget_copy_T100 | `paper_ladder.yaml` | 3 |" in three.markdown() and "| 0.0221 |" in three.markdown()
