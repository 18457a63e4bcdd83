"""The leaderboard of the tiny sweep (tests/report_sweep.py): exports and reproduce commands."""
from __future__ import annotations

import csv
import json
import shlex
import subprocess

from bench import cli
from bench.config import load
from report_sweep import variant_key


# ---------------------------------------------------------------- leaderboard


def test_leaderboard_exports_and_reproduce_commands(sweep, tmp_path):
    out = tmp_path / "lb"
    assert cli.main(["leaderboard", "tiny", "--store", str(sweep["store"].root), "--out", str(out)]) == 0
    data = json.loads((out / "leaderboard.json").read_text())["rows"]
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data) == 5
    store = sweep["store"]
    for task in {r["task"] for r in data}:
        ranked = [r for r in data if r["task"] == task and r["rank"] is not None]
        assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
        means = [r["mean"] for r in ranked]
        assert means == sorted(means)  # test/loss: lower is better
    for r, c in zip(data, rows):
        assert c["variant_hash"] == r["variant_hash"] and c["command"] == r["command"]
        assert c["runs"].split() == r["runs"]
        for h in r["runs"]:
            cfg = store.config(h)
            assert variant_key(cfg) == r["variant_hash"]
        commits = {store.result(h).get("git_commit") for h in r["runs"]} - {None}
        assert set(r["git_commit"]) == commits and commits
        # one command per seed: its overrides rebuild the run's exact config hash
        assert len(r["commands"]) == len(r["runs"])
        by_seed = {store.config(h)["seed"]: h for h in r["runs"]}
        for cmd in r["commands"]:
            words = shlex.split(cmd)
            assert words[:2] == ["rnnbench", "train"]
            cfg = load(None, words[2:])
            assert cfg.hash == by_seed[cfg.seed]
        assert c["commands"].split("\n") == r["commands"]
        # the loop form really runs: bash with a stand-in `rnnbench` that prints its arguments
        script = "rnnbench() { printf '%s\\x1f' \"$@\"; echo; }\n" + r["command"]
        lines = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(lines) == len(r["runs"])
        hashes = {load(None, ln.rstrip("\x1f").split("\x1f")[1:]).hash for ln in lines}
        assert hashes == set(r["runs"])
    md = (out / "leaderboard.md").read_text()
    assert "copy T=5" in md and all(r["variant_hash"] in md for r in data)
