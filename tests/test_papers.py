"""Published-comparison sweeps expand to the papers' configurations; the claim checker's verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench.sweep import expand
from reports.claims import AGREES, DISAGREES, INCONCLUSIVE, all_claims, check_claim
from reports.published_runs import expected

SWEEPS = Path(__file__).resolve().parents[1] / "bench" / "sweeps"
NAMES = ["copy", "adding", "greff", "jozefowicz", "orthinit"]


def _cfgs(name):
    return expand(SWEEPS / f"paper_{name}.yaml")[1]


def _params(cfg) -> int:
    from tasks.registry import task_class

    m = task_class(cfg.task.name)(cfg).module(None)
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_files_exist_and_expand(name):
    for suffix in ("", "_cpu"):
        sweep_name, cfgs = expand(SWEEPS / f"paper_{name}{suffix}.yaml")
        assert sweep_name == f"paper_{name}{suffix}" and cfgs
    claims = yaml.safe_load((SWEEPS / f"paper_{name}.claims.yaml").read_text())
    assert claims["name"] == name and claims["full"] == f"paper_{name}.yaml"
    assert claims["reduced"] == f"paper_{name}_cpu.yaml" and claims["claims"]


@pytest.mark.parametrize("name,Ts", [("copy", {100, 200, 300, 500}), ("adding", {100, 200, 400, 750})])
def test_arjovsky_full_configs(name, Ts):
    cfgs = _cfgs(name)
    assert {c.task.T for c in cfgs} == Ts
    for c in cfgs:
        assert c.task.batch_size == 20
        o = c.optim
        assert (o.name, o.lr, o.alpha, o.grad_clip) == ("rmsprop", 1e-3, 0.9, 1.0)
    units = {c.model.cell: c.model.hidden_size for c in cfgs}
    if name == "copy":
        assert units == {"rnn_tanh": 80, "irnn": 80, "lstm": 40, "gru": 47}
        assert all(c.task.n_categories == 8 and c.task.n_symbols == 10 for c in cfgs)
    else:
        assert units == {"rnn_tanh": 128, "irnn": 128, "lstm": 128}
    irnn = next(c for c in cfgs if c.model.cell == "irnn")
    assert irnn.model.recurrent_init == "identity"


def test_copy_gru_matches_lstm_parameter_count():
    cfgs = [c for c in _cfgs("copy") if c.task.T == 100 and c.seed == 0]
    p = {c.model.cell: _params(c) for c in cfgs}
    assert abs(p["gru"] - p["lstm"]) / p["lstm"] < 0.02
    # and no other GRU width is closer
    import dataclasses

    gru = next(c for c in cfgs if c.model.cell == "gru")
    for h in (46, 48):
        other = dataclasses.replace(gru, model=dataclasses.replace(gru.model, hidden_size=h))
        assert abs(_params(other) - p["lstm"]) >= abs(p["gru"] - p["lstm"])


@pytest.mark.parametrize("name", ["copy", "adding"])
def test_arjovsky_reduced_keeps_units_and_optimizer(name):
    full, red = _cfgs(name), _cfgs(f"{name}_cpu")
    key = lambda c: (c.model.cell, c.model.hidden_size, repr(c.optim), c.task.batch_size)
    assert {key(c) for c in red} == {key(c) for c in full}
    assert {c.task.T for c in red} < {c.task.T for c in full}


def test_greff_variants_and_seeds():
    want = {"lstm_vanilla", "lstm_nig", "lstm_nfg", "lstm_nog", "lstm_niaf", "lstm_noaf", "lstm_np",
            "lstm_cifg", "lstm_fgr"}
    for name in ("greff", "greff_cpu"):
        cfgs = _cfgs(name)
        assert {c.model.cell for c in cfgs} == want
        assert {c.task.name for c in cfgs} == {"adding", "lm"}      # one synthetic, one real task
        assert len({c.seed for c in cfgs}) >= 3                     # enough for a Welch t-test
    cfgs = _cfgs("greff")
    by = {c.model.cell: c.model for c in cfgs}
    assert by["lstm_vanilla"].peepholes and not by["lstm_np"].peepholes
    assert not by["lstm_nfg"].forget_gate and not by["lstm_noaf"].output_activation and by["lstm_cifg"].coupled


def test_jozefowicz_and_orthinit():
    for name in ("jozefowicz", "jozefowicz_cpu"):
        models = {(c.model.cell, c.model.forget_bias) for c in _cfgs(name)}
        assert models == {("lstm", 0.0), ("lstm", 1.0), ("gru", None)}
    for name in ("orthinit", "orthinit_cpu"):
        cfgs = _cfgs(name)
        assert {(c.model.cell, c.model.recurrent_init) for c in cfgs} == {("rnn_tanh", "default"), ("rnn_tanh", "orthogonal")}
        assert {c.task.name for c in cfgs} == {"copy", "adding"}


def test_claims_files_load():
    kinds = {"beats_baseline", "better_than_ref", "worse_than_ref", "not_worse_than_ref", "not_better_than_ref",
             "gradflow_ratio"}
    names = {c["name"] for c in all_claims()}
    assert set(NAMES) <= names
    for c in all_claims():
        assert all(x["kind"] in kinds for x in c["claims"])


# ---------------------------------------------------------------- the checker on hand-made results


def run(cell, loss, T=100, seed=0, status="done", base=0.17, **model):
    return {"config": {"seed": seed, "task": {"name": "copy", "T": T}, "model": {"cell": cell, **model}},
            "status": status, "metrics": {"test/loss": loss}, "baseline": {"test/loss": base},
            "primary": "test/loss", "mode": "min"}


BEATS = {"kind": "beats_baseline", "select": {"model.cell": "lstm"}, "expect": {100: True, 200: False}}


def test_beats_baseline_agrees():
    runs = [run("lstm", 0.05, 100), run("lstm", 0.169, 200, base=0.17), run("gru", 0.0, 200)]
    r = check_claim(BEATS, runs, margin=0.05)
    assert r["verdict"] == AGREES, r


def test_beats_baseline_disagrees():
    runs = [run("lstm", 0.05, 100), run("lstm", 0.01, 200)]   # beats at 200, paper says it does not
    assert check_claim(BEATS, runs)["verdict"] == DISAGREES


def test_beats_baseline_missed_success_full_vs_reduced():
    runs = [run("lstm", 0.3, 100), run("lstm", 0.3, 200)]
    assert check_claim(BEATS, runs, reduced=False)["verdict"] == DISAGREES
    assert check_claim(BEATS, runs, reduced=True)["verdict"] == INCONCLUSIVE


def test_beats_baseline_ignores_unfinished_and_reports_missing():
    runs = [run("lstm", 0.05, 100), run("lstm", float("nan"), 200, status="failed")]
    r = check_claim(BEATS, runs)
    assert r["verdict"] == AGREES and "200" in r["why"]
    assert check_claim(BEATS, [])["verdict"] == INCONCLUSIVE


def test_diverged_runs_count_as_not_beating_and_never_enter_the_mean():
    at200 = [run("lstm", float("nan"), 200, status="diverged"), run("lstm", 1e27, 200, status="diverged", seed=1)]
    r = check_claim(BEATS, [run("lstm", 0.05, 100)] + at200)
    assert r["verdict"] == AGREES and r["rows"][1]["ours"] == "does not beat (2 of 2 finished runs diverged)"
    # a majority of the runs must beat: 1 beating against 1 diverged does not, 2 against 1 does
    r = check_claim(BEATS, [run("lstm", 0.05, 100), run("lstm", 0.05, 100, status="diverged", seed=1)] + at200)
    assert r["rows"][0]["ours"] == "does not beat (0.05 vs 0.17, n=1; 1 diverged)" and r["verdict"] == DISAGREES
    r = check_claim(BEATS, [run("lstm", 0.05, 100), run("lstm", 0.06, 100, seed=2),
                            run("lstm", 0.05, 100, status="diverged", seed=1)] + at200)
    assert r["rows"][0]["ours"] == "beats (0.055 vs 0.17, n=2; 1 diverged)" and r["verdict"] == AGREES
    r = check_claim(BEATS, [run("lstm", 0.05, 100)] + at200 + [run("lstm", 0.05, 200, status="failed", seed=2)])
    assert r["rows"][1]["ours"] == "does not beat (2 of 3 finished runs diverged)"   # the failed one finished too


def test_a_finite_exploded_loss_is_reported_diverged():
    from reports.claims import run_dict
    from reports.collect import EXPLODED, Run

    def as_run(loss, mode="min", base=0.04):
        result = {**run("irnn", loss, 500, base=base), "mode": mode}
        return Run("h", result.pop("config"), result, "done")
    blown, spiky, fine = as_run(5.06e16), as_run(EXPLODED * 0.04 * 1.01), as_run(EXPLODED * 0.04 * 0.99)
    assert (blown.status, spiky.status, fine.status) == ("diverged", "diverged", "done")
    assert blown.error == "test/loss 5.06e+16 > 1000 x baseline 0.04: finite but exploded (the runner recorded it done)"
    assert run_dict(blown)["status"] == "diverged" and run_dict(blown)["error"] == blown.error
    assert as_run(5e16, mode="max").status == "done"           # only a loss (mode min) explodes
    assert as_run(float("inf")).status == "done"               # not finite: the runner's own rule (diverged there)


def test_a_run_with_divergence_factor_null_is_never_reported_exploded():
    # null turns the bound off (NaN/inf only), in the runner and so in the reports; a stored config
    # without the field (runs from before it) gets the default bound; an explicit factor is honoured
    from reports.collect import Run

    def as_run(trainer):
        result = run("irnn", 5.06e16, 500, base=0.04)
        return Run("h", {**result.pop("config"), "trainer": trainer}, result, "done")
    assert [as_run(t).status for t in ({"divergence_factor": None}, {}, {"divergence_factor": 1e20})] == \
        ["done", "diverged", "done"]


def _welch_claim(kind):
    return {"kind": kind, "select": {"model.cell": "lstm_nfg"}, "ref": {"model.cell": "lstm_vanilla"},
            "task": {"task.name": "copy"}}


def test_welch_claims():
    ref = [run("lstm_vanilla", x, seed=i) for i, x in enumerate([0.10, 0.11, 0.12])]
    worse = [run("lstm_nfg", x, seed=i) for i, x in enumerate([0.30, 0.31, 0.32])]
    better = [run("lstm_nfg", x, seed=i) for i, x in enumerate([0.01, 0.011, 0.012])]
    same = [run("lstm_nfg", x, seed=i) for i, x in enumerate([0.105, 0.125, 0.10])]
    assert check_claim(_welch_claim("worse_than_ref"), ref + worse)["verdict"] == AGREES
    assert check_claim(_welch_claim("worse_than_ref"), ref + better)["verdict"] == DISAGREES
    got = check_claim(_welch_claim("worse_than_ref"), ref + same)
    assert got["verdict"] == INCONCLUSIVE
    assert got["why"].endswith("the paper's direction; 95% interval of the difference from the reference -0.02738 to 0.02738)")
    assert check_claim(_welch_claim("not_worse_than_ref"), ref + same)["verdict"] == INCONCLUSIVE   # test_claims_margin
    assert check_claim(_welch_claim("not_worse_than_ref"), ref + better)["verdict"] == AGREES
    assert check_claim(_welch_claim("not_worse_than_ref"), ref + worse)["verdict"] == DISAGREES
    assert check_claim(_welch_claim("not_better_than_ref"), ref + better)["verdict"] == DISAGREES
    assert check_claim(_welch_claim("not_better_than_ref"), ref + worse)["why"] == "significantly worse"
    assert check_claim(_welch_claim("not_better_than_ref"), ref + same)["verdict"] == INCONCLUSIVE
    assert check_claim(_welch_claim("better_than_ref"), ref + better)["verdict"] == AGREES
    assert check_claim(_welch_claim("better_than_ref"), ref + worse)["verdict"] == DISAGREES
    # one seed a side: no test
    assert check_claim(_welch_claim("worse_than_ref"), ref[:1] + worse[:1])["verdict"] == INCONCLUSIVE
    # a diverged seed is not a value
    diverged = worse[:1] + [run("lstm_nfg", float("inf"), seed=5, status="diverged")]
    assert check_claim(_welch_claim("worse_than_ref"), ref + diverged)["verdict"] == INCONCLUSIVE
    # other tasks are ignored
    other = [{**r, "config": {**r["config"], "task": {"name": "adding", "T": 100}}} for r in worse]
    assert check_claim(_welch_claim("worse_than_ref"), ref + other)["verdict"] == INCONCLUSIVE


def test_welch_claim_over_two_baselines_is_an_error():
    # a selector too wide (no task.T) would pool T=100 and T=200 and quote one of their baselines
    ref = [run("lstm_vanilla", 0.10 + i / 100, T=100, seed=i) for i in range(3)]
    other_T = [run("lstm_nfg", 0.05 + i / 100, T=200, seed=i, base=0.09) for i in range(3)]
    claim = {**_welch_claim("better_than_ref"), "id": "nfg_copy"}
    with pytest.raises(ValueError, match=r"^claim nfg_copy: its runs span 2 task baselines \(0\.09, 0\.17\); "
                                         r"narrow its task selector \(e\.g\. task\.T\)$"):
        check_claim(claim, ref + other_T)
    assert check_claim({**claim, "task": {"task.name": "copy", "task.T": 100}}, ref + other_T)["verdict"] == INCONCLUSIVE


def test_gradflow_claim():
    c = {"kind": "gradflow_ratio", "select": {"model.recurrent_init": "orthogonal"},
         "ref": {"model.recurrent_init": "default"}, "min_ratio": 10}
    curve = lambda init, last: {"config": {"model": {"cell": "rnn_tanh", "recurrent_init": init}}, "phase": "init",
                                "norm": [1.0, 0.5, last]}
    r = check_claim(c, [], gradflow=[curve("orthogonal", 1e-2), curve("default", 1e-6), curve("default", 3e-6)])
    assert r["verdict"] == AGREES   # the mean over the runs (of every T) at each run's own largest lag, n stated
    assert r["ours"] == "at each run's largest lag, mean over the seed-0 runs at init (n=1/2): 0.01 vs 2e-06 (ratio 5e+03)"
    assert check_claim(c, [], gradflow=[curve("orthogonal", 5e-6), curve("default", 1e-6)])["verdict"] == DISAGREES
    assert check_claim(c, [], gradflow=[])["verdict"] == INCONCLUSIVE


def test_welch_claim_inconclusive_when_neither_learnt():
    ref = [run("lstm_vanilla", x, seed=i, base=0.167) for i, x in enumerate([0.170, 0.171, 0.172])]
    same = [run("lstm_nfg", x, seed=i, base=0.167) for i, x in enumerate([0.168, 0.169, 0.170])]
    worse = [run("lstm_nfg", x, seed=i, base=0.167) for i, x in enumerate([0.30, 0.31, 0.32])]
    r = check_claim(_welch_claim("not_worse_than_ref"), ref + same)
    assert r["verdict"] == INCONCLUSIVE and "neither" in r["why"]
    assert check_claim(_welch_claim("worse_than_ref"), ref + worse)["verdict"] == INCONCLUSIVE


# ---------------------------------------------------------------- the report from a store


def _fake_store(root: Path, sweep: str, loss) -> None:
    """The configs of every file of the sweep (paper_socher has three) as finished runs with
    `loss(cfg)` as test/loss (no training)."""
    from bench.store import Store, write_json
    from reports.published_runs import sweep_files

    store = Store(root)
    cfgs = list({c.hash: c for path in sweep_files(sweep) for c in expand(path)[1]}.values())
    name = sweep
    for c in cfgs:
        d = store.run_dir(c.hash)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.yaml").write_text(yaml.safe_dump(c.to_dict()))
        write_json(d / "result.json", {"status": "done", "metrics": {"test/loss": loss(c)}, "primary": "test/loss",
                                       "mode": "min", "baseline": {"test/loss": 0.17}, "wall_time_s": 2.0,
                                       "params": 100, "git_commit": "abc1234"})
    store.record_sweep(name, [c.hash for c in cfgs])


@pytest.mark.parametrize("name", ["jozefowicz", "copy"])
def test_build_writes_report_and_verdicts(tmp_path, name):
    from reports.claims import load_claims
    from reports.papers import build, write_readme

    def loss(c):  # forget bias 1 clearly better than 0 and as good as the GRU; every variant beats the baseline
        return {0.0: 0.10}.get(c.model.forget_bias, 0.01) + 0.001 * c.seed

    _fake_store(tmp_path / "store", f"paper_{name}", loss)
    path = build(load_claims(name), tmp_path / "store", tmp_path / "out")
    text = path.read_text()
    for heading in ("## Verdict", "## Results", "## Figures", "## Reduction", "## Cost on this machine"):
        assert heading in text
    n = len(expected(f"paper_{name}"))
    assert f"full sweep `paper_{name}`" in text and f"**{n} of {n} runs finished**" in text
    verdicts = {c["id"]: c["verdict"] for c in json.loads((path.parent / "claims.json").read_text())["claims"]}
    if name == "jozefowicz":
        assert verdicts == {k + t: AGREES for k in ("bias1_better_than_bias0", "bias1_not_worse_than_gru") for t in ("", "_ptb")}
        assert (path.parent / "bars.png").is_file()
        assert "Welch p: two-sided Welch t-test" in text and "(a one-sided test at 0.025)" in text
    else:
        assert (path.parent / "vs_T.png").is_file() and set(verdicts.values()) <= {AGREES, DISAGREES, INCONCLUSIVE}
    readme = write_readme([load_claims(name)], tmp_path / "out").read_text()
    assert "## Published comparisons" in readme and f"[report]({name}/report.md)" in readme
    assert f"| {n} / {n} |" in readme and "Seeds: how many distinct seeds" in readme
    assert "### Full sweeps: estimated cost on this machine, and how to start them" in readme
    assert f"rnnbench sweep bench/sweeps/paper_{name}.yaml --workers 2 --pack auto --store results_published" in readme


def test_reduced_runs_leave_every_claim_pending(tmp_path):
    """Runs of the reduced sweep only: shown, marked REDUCED, and no claim gets a verdict from them."""
    from reports.claims import load_claims
    from reports.papers import build

    _fake_store(tmp_path / "store", "paper_jozefowicz_cpu", lambda c: {0.0: 0.10}.get(c.model.forget_bias, 0.01))
    path = build(load_claims("jozefowicz"), tmp_path / "store", tmp_path / "out")
    text = path.read_text()
    n = len(expected("paper_jozefowicz"))
    assert "**REDUCED**" in text and "reduced sweep `paper_jozefowicz_cpu`" in text and f"**0 of {n} runs finished**" in text
    claims = json.loads((path.parent / "claims.json").read_text())
    assert claims["reduced"] and {c["verdict"] for c in claims["claims"]} == {"pending"}
    assert all(c["why"].startswith("0 of ") and "runs of the full sweep `paper_jozefowicz` finished" in c["why"]
               for c in claims["claims"])


def test_a_packed_members_machine_time_is_its_share_of_the_group():
    from reports.collect import flatten, machine_s
    alone = {"wall_time_s": 120.0, "implementation": {"device": "cpu", "packed": None}}
    member = {"wall_time_s": 300.0, "implementation": {"device": "cpu", "packed": 5}}
    assert machine_s(alone) == 120.0 and machine_s(member) == 60.0
    assert machine_s(flatten(member)) == 60.0 and machine_s({"wall_time_s": None}) == 0.0


def test_published_time_columns_flag_rows_trained_under_load():
    """papers' results table and the published-figures table: ‡ on a row with a run whose load
    average exceeded its CPU count, and the footnote; rows of runs without the field unmarked."""
    from reports.doc import Doc
    from reports.papers import variant_row
    from reports.published_table import published_section

    def r(seed, load=None):
        env = {"environment": {"cpu": "x", "load": load}} if load else {}
        return {"config": {"seed": seed, "trainer": {"max_steps": 10}}, "status": "done", "primary": "test/acc",
                "mode": "max", "metrics": {"test/acc": 0.5}, "wall_time_s": 2.0, **env}

    busy, idle, old = [r(0, {"cpus": 2, "start": 0.5, "end": 4.0}), r(1)], [r(0, {"cpus": 2, "start": 2.0, "end": 1.0})], [r(0)]
    assert [variant_row("v", rs, None, {}, {})[7] for rs in (busy, idle, old)] == ["2 ‡", "2", "2"]
    doc = Doc()
    published_section(doc, [{"label": "busy", "select": 0, "paper": {"test/acc": 50.0}},
                            {"label": "old", "select": 1, "paper": {"test/acc": 50.0}}], busy + old,
                      pick=lambda run, sel: (run in busy) == (sel == 0))
    md = doc.markdown()
    assert "| 2 ‡ |" in md and "| 2 |" in md and "‡ the time was measured under load" in md


def test_results_groups_keep_variants_that_differ_in_another_model_key_apart():
    """paper_socher's LSTM and BiLSTM differ only in model.bidirectional: the Results table and the
    bars figure showed them as one variant `lstm hidden_size=150` (n=20, one Welch p of the pooled
    seeds). Every model key that splits runs under one label now names the variants; a key missing
    from some configs (runs stored before the field) splits nothing."""
    from reports.paper_figures import groups

    def tb(cell, seed, **model):
        return {"config": {"seed": seed, "task": {"name": "treebank"}, "model": {"cell": cell, "hidden_size": 150, **model}},
                "status": "done", "metrics": {"test/loss": 0.4}}
    runs = [tb("lstm", s, bidirectional=b) for b in (False, True) for s in range(3)] + \
        [tb("recnn", s, bidirectional=False) for s in range(3)]
    got = {lab: len(rs) for lab, rs in groups(runs)["treebank"].items()}
    assert got == {"lstm bidirectional=False": 3, "lstm bidirectional=True": 3, "recnn": 3}
    drift = [tb("recnn", 0, dropout=0.0), tb("recnn", 1)]          # dropout absent from the older config
    assert list(groups(drift)["treebank"]) == ["recnn"]
    longer = [tb("lstm", 0), tb("lstm", 1)]                       # the same model trained twice as long
    longer[1]["config"]["trainer"] = {"max_steps": 12744}
    longer[0]["config"]["trainer"] = {"max_steps": 6372}
    assert list(groups(longer)["treebank"]) == ["lstm max_steps=6372", "lstm max_steps=12744"]


def test_published_rows_name_unfinished_seeds_by_status_and_the_reduction_sorts_numbers():
    from reports.doc import Doc
    from reports.papers import sweep_summary
    from reports.published_table import published_section

    runs = [run("lstm", 0.4, seed=s, status=st) for s, st in enumerate(["done", "pending", "pending", "failed"])]
    doc = Doc()
    published_section(doc, [{"label": "lstm", "select": {"model.cell": "lstm"}, "paper": {"test/loss": 1.0}}], runs)
    assert "| pending: seeds 1, 2; failed: seed 3 |" in doc.markdown()
    from reports.published_runs import sweep_files
    s = sweep_summary(sweep_files("paper_socher"))   # str order gave steps 12744, 3420, 6372 and hidden 150, 25, 30
    assert s["steps"] == [3420, 6372, 12744] and s["hidden"] == [25, 30, 150]


def test_welch_claim_says_which_runs_it_left_out():
    """A diverged or failed seed is left out of the t-test (never averaged in); the claim's 'ours'
    says so instead of a bare n, and the published verdict section states the test."""
    ref = [run("lstm_vanilla", x, seed=i) for i, x in enumerate([0.10, 0.11, 0.12])]
    sel = [run("lstm_nfg", x, seed=i) for i, x in enumerate([0.30, 0.31, 0.32])]
    out = [run("lstm_nfg", float("inf"), seed=3, status="diverged"), run("lstm_vanilla", None, seed=3, status="failed")]
    got = check_claim(_welch_claim("worse_than_ref"), ref + sel + out)
    assert got["verdict"] == AGREES and got["ours"].endswith("n=3/3; left out of the test: 1 diverged (variant), 1 failed (reference)")
    assert check_claim(_welch_claim("worse_than_ref"), ref + sel)["ours"].endswith("n=3/3")

