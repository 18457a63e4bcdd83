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
    from reports.published_runs import expected
    assert f"| runs | {len(expected('paper_socher'))} |\n" in text


def test_evidence_section_says_when_no_evidence_run_has_run(tmp_path):
    from reports.claims import load_claims
    from reports.doc import Doc
    from reports.evidence import evidence_section

    none, some = Doc(), Doc()
    evidence_section(none, load_claims("copy"), tmp_path)          # no `evidence`: no section
    evidence_section(some, load_claims("adding"), tmp_path)        # names paper_adding_long.yaml; empty store
    assert none.markdown().strip() == ""
    assert "`paper_adding_long.yaml`" in some.markdown() and "None of them has run yet." in some.markdown()
