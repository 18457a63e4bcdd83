"""Subcommands of `rnnbench` that read the result store: report, leaderboard, gradflow."""
from __future__ import annotations

import os


def _store(p) -> None:
    p.add_argument("--store", default="results", help="result store directory (default: ./results)")


def add_parsers(sub) -> None:
    """Register the reporting subcommands (each sets `func`)."""
    p = sub.add_parser("report", help="Markdown + HTML report of sweeps (tables, CIs, curves, solved vs T)")
    p.add_argument("sweeps", nargs="*", metavar="SWEEP", help="sweep names (default: every run in the store)")
    _store(p)
    p.add_argument("--out", default=None, help="output directory (default: STORE/reports/<sweeps>)")
    p.add_argument("--reference", nargs="+", default=[], metavar="KEY=VALUE",
                   help="reference variant for Welch t-tests, e.g. model.cell=lstm_vanilla")
    p.add_argument("--from-wandb", default=None, metavar="ENTITY/PROJECT",
                   help="also read runs from the W&B API (needs W&B online)")
    p.add_argument("--publish", nargs="?", const="", default=None, metavar="ENTITY/PROJECT",
                   help="also save a W&B Report (needs wandb-workspaces and W&B online; "
                        "default project: --from-wandb's, else rnnbench)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("leaderboard", help="variants ranked per task, with reproduce commands (md, csv, json)")
    p.add_argument("sweeps", nargs="*", metavar="SWEEP", help="sweep names (default: every run in the store)")
    _store(p)
    p.add_argument("--out", default=None, help="output directory (default: STORE/reports/<sweeps>)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("gradflow", help="plot ||dl_T/dh_t|| against the lag T-t, at init and after training")
    p.add_argument("--cell", nargs="+", default=[], help="cells to measure at init (default: rnn_tanh lstm gru, "
                   "unless --run is given)")
    p.add_argument("--task", default=None, help="task preset giving the inputs and the loss (default: copy)")
    p.add_argument("--input-size", type=int, default=None, help="random N(0,1) inputs of this size instead of a task")
    p.add_argument("-T", "--T", type=int, default=None, dest="T",
                   help="task T (default: the preset's / the run's) or sequence length with --input-size")
    p.add_argument("--set", nargs="+", default=[], metavar="model.KEY=VALUE", help="model settings, e.g. model.hidden_size=64")
    p.add_argument("--task-set", nargs="+", default=[], metavar="task.KEY=VALUE", help="task settings")
    p.add_argument("--run", nargs="+", default=[], metavar="HASH", help="runs of the store: measured at init and trained")
    _store(p)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (gradflow.png, .json, .csv)")
    p.set_defaults(func=cmd_gradflow)


def _default_out(a) -> str:
    return a.out or os.path.join(a.store, "reports", "+".join(a.sweeps) or "all")


def cmd_report(a) -> int:
    from reports.report import build_report

    path = build_report(a.store, a.sweeps, _default_out(a), reference=a.reference, from_wandb=a.from_wandb,
                        publish=a.publish)
    print(f"report: {path}  (and {path.with_suffix('.html')})")
    url = path.parent / "wandb_report_url.txt"
    if a.publish is not None and url.is_file():
        print(f"W&B report: {url.read_text().strip()}")
    return 0


def cmd_leaderboard(a) -> int:
    from reports.leaderboard import build_leaderboard

    paths = build_leaderboard(a.store, a.sweeps, _default_out(a))
    print(f"leaderboard: {paths['md']}  {paths['csv']}  {paths['json']}")
    return 0


def cmd_gradflow(a) -> int:
    from reports.gradflow import run_diagnostic

    paths = run_diagnostic(a.out, a.cell, a.task, a.input_size, a.T, a.set, a.task_set, a.run, a.store,
                           a.batch, a.seed)
    print(f"gradflow: {paths['png']}  {paths['json']}  {paths['csv']}")
    return 0
