"""`rnnbench leaderboard`: variants ranked per task by the mean of the task's primary metric.

Every row carries what it takes to check it: the variant hash (config minus seed), the run
hashes, the git commit(s), the seeds, and commands that re-create the runs: one
`rnnbench train ...` per seed, and a shell loop over the seeds that runs them all. Exported as
leaderboard.md, leaderboard.csv and leaderboard.json. Variants without a finished seed rank last.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path
from typing import Union

from bench.config import load, reproduce_command, resolve
from bench.schema import ConfigError
from bench.store import Store, write_atomic
from reports.collect import Run, TaskGroup, Variant, as_store, group, store_runs
from reports.doc import Doc
from reports.report import DASH, ci_text, num


def _command_ok(cmd: str, h: str) -> bool:
    try:
        words = shlex.split(cmd)
        if words[:2] != ["rnnbench", "train"]:
            return False
        return load(None, words[2:]).hash == h
    except (ConfigError, ValueError, KeyError):
        return False


def run_command(run: Run) -> str:
    """The result.json command when it still re-creates the run's config hash with this code;
    otherwise one regenerated from the saved config (same hash by construction)."""
    cmd = (run.result or {}).get("command")
    if cmd and _command_ok(cmd, run.hash):
        return cmd
    return reproduce_command(resolve(run.config))


def seed_loop(commands: dict) -> str:
    """`for seed in 0 1 2; do rnnbench train ... seed=$seed; done` from per-seed commands that
    differ only in their seed."""
    seeds = sorted(commands)
    if len(seeds) == 1:
        return commands[seeds[0]]
    words = [w for w in shlex.split(commands[seeds[0]]) if not w.startswith("seed=")]
    base = " ".join(shlex.quote(w) for w in words)
    return f"for seed in {' '.join(map(str, seeds))}; do {base} seed=$seed; done"


def rank(g: TaskGroup) -> list[Variant]:
    """Finished variants by mean (best first), then those without a finished seed."""
    done = [v for v in g.variants if v.usable()]
    rest = [v for v in g.variants if not v.usable()]
    done.sort(key=lambda v: v.summary().mean, reverse=(g.mode == "max"))
    return done + rest


def rows(groups: list[TaskGroup]) -> list[dict]:
    out = []
    for g in groups:
        for i, v in enumerate(rank(g), 1):
            s = v.summary()
            cmds = {r.seed: run_command(r) for r in v.runs}
            # every per-seed command must come from one setting: the loop then really re-creates them
            words = {tuple(w for w in shlex.split(c) if not w.startswith("seed=")) for c in cmds.values()}
            loop = seed_loop(cmds) if len(words) == 1 else " && ".join(cmds[k] for k in sorted(cmds))
            out.append({
                "task": g.title, "task_name": g.name, "task_config": g.config,
                "rank": i if v.usable() else None, "variant": v.label, "variant_hash": v.key,
                "metric": g.primary, "mode": g.mode,
                "mean": s.mean, "std": s.std, "ci95_low": s.ci_low, "ci95_high": s.ci_high, "n": s.n,
                "baseline": g.baseline_value(),
                "seeds": [r.seed for r in v.runs], "seeds_used": [r.seed for r in v.usable()],
                "runs": [r.hash for r in v.runs],
                "statuses": {r.hash: r.status for r in v.runs},
                "git_commit": v.commits(),
                "params": v.params,
                "command": loop,
                "commands": [cmds[k] for k in sorted(cmds)],
            })
    return out


def _seeds_text(r: dict) -> str:
    used = " ".join(map(str, r["seeds_used"])) or DASH
    other = [f"seed {s} {r['statuses'][h]}" for s, h in zip(r["seeds"], r["runs"]) if s not in r["seeds_used"]]
    return used + (f" ({', '.join(other)})" if other else "")


def build_leaderboard(store: Union[Store, str, Path], sweeps: list[str], out_dir) -> dict[str, Path]:
    """Write leaderboard.md/.csv/.json into out_dir; returns {"md": .., "csv": .., "json": ..}."""
    store = as_store(store)
    groups = group(store_runs(store, list(sweeps or [])))
    data = rows(groups)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "json": out / "leaderboard.json"}

    write_atomic(paths["json"], json.dumps({"sweeps": list(sweeps or []), "store": str(store.root), "rows": data},
                                           indent=2, default=str) + "\n")

    fields = ["task", "rank", "variant", "variant_hash", "metric", "mode", "mean", "std", "ci95_low", "ci95_high",
              "n", "baseline", "seeds", "seeds_used", "runs", "git_commit", "params", "command", "commands"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in data:
        w.writerow({**r, "seeds": " ".join(map(str, r["seeds"])), "seeds_used": " ".join(map(str, r["seeds_used"])),
                    "runs": " ".join(r["runs"]), "git_commit": " ".join(r["git_commit"]),
                    "commands": "\n".join(r["commands"])})
    write_atomic(paths["csv"], buf.getvalue())

    doc = Doc()
    doc.h(1, "rnnbench leaderboard" + (f": {', '.join(sweeps)}" if sweeps else ""))
    doc.p("Ranked per task by the mean of the primary metric over finished seeds (diverged, failed and "
          "unfinished runs are not averaged in: `n` counts the seeds used). 95% CI: Student t. "
          "Commands re-create each run's exact config (same config hash); run them in a fresh store.")
    for g in groups:
        doc.h(2, f"{g.title}: `{g.primary}` ({'lower' if g.mode == 'min' else 'higher'} is better)")
        tr = [r for r in data if r["task"] == g.title and r["task_config"] == g.config]
        doc.table(["rank", "variant", "mean ± std", "95% CI", "n", "seeds used", "variant hash", "runs", "commit", "command"],
                  [[r["rank"] or DASH, r["variant"],
                    DASH if r["mean"] is None else (num(r["mean"]) + ("" if r["std"] is None else f" ± {num(r['std'])}")),
                    ci_text(next(v for v in g.variants if v.key == r["variant_hash"]).summary()), r["n"],
                    _seeds_text(r), f"`{r['variant_hash']}`",
                    " ".join(f"`{h}`" for h in r["runs"]), " ".join(r["git_commit"]) or DASH,
                    f"`{r['command']}`"] for r in tr], "rlllrlllll")
    write_atomic(paths["md"], doc.markdown())
    return paths
