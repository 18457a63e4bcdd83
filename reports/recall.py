"""What a copy-task model recalls: a stored run's per-position cross-entropy and accuracy over the
n recalled symbols on its task's test set, beside the mean loss of the blank phase.

    python -m reports.recall --store results_published --sweep paper_copy -T 100 --out reports/published/copy/recall.json

The memoryless baseline, n ln K / (T + 2n), is blank with certainty for the first T + n outputs
and uniform over the K symbols at the n recalled ones: ln K nats (ln 8 = 2.079) and accuracy 1/K
at each of them. Its blank phase costs nothing, so a model beats it only through the recalled
positions: the table says at which ones (recalled from the sequence's start or end) and by how
much. Weights from each run's last checkpoint (the tested weights: trainer.test_on=last), read
with weights_only=True; `test_loss_here` is this evaluation's loss of the whole sequence beside the
run's recorded `test/loss` (equal up to float32 summation order). `render` writes the section
reports/papers.py puts in the copy report from the committed JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from bench.config import resolve
from bench.store import Store, write_atomic
from reports.collect import flatten
from reports.doc import Doc
from tasks.registry import task_class

FORMAT = 1


def load_run(path):
    """(module in eval mode, resolved config, task) from a run's checkpoint (weights_only=True)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = resolve(ckpt["hyper_parameters"]["config"])
    if cfg.task.name != "copy":
        raise ValueError(f"{path}: a {cfg.task.name!r} run; allowed: copy runs")
    task = task_class(cfg.task.name)(cfg)
    module = task.module(task.datamodule())
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), cfg, task


@torch.no_grad()
def recall(path) -> dict:
    """Per recalled position (1..n, in input order): mean cross-entropy (nats) and accuracy on the
    test set; the blank phase's mean cross-entropy per position; the whole sequence's loss."""
    module, cfg, task = load_run(path)
    n = cfg.task.n_symbols
    ce, acc, blank, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), 0.0, 0
    for x, y in task.datamodule().test_dataloader():
        logits = module(x)
        per = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").double()     # (B, L)
        ce += per[:, -n:].sum(0)
        acc += (logits[:, -n:].argmax(-1) == y[:, -n:]).double().sum(0)
        blank += float(per[:, :-n].mean(1).sum())
        count += len(y)
    L = y.shape[1]
    out = {"recall_ce": (ce / count).tolist(), "recall_acc": (acc / count).tolist(), "blank_ce": blank / count}
    out["test_loss_here"] = (out["blank_ce"] * (L - n) + sum(out["recall_ce"])) / L
    return out


def measure(store, sweep: str, T: Optional[int] = None) -> list[dict]:
    """`recall` of every finished copy run of `sweep` in `store` with a checkpoint (task.T = T if given)."""
    store = Store(store)
    rows = []
    for h in store.sweep_hashes(sweep):
        res, ckpt = store.result(h), store.checkpoint(h)
        if res is None or res.get("status") != "done" or ckpt is None:
            continue
        cfg = flatten(store.config(h))
        if cfg.get("task.name") != "copy" or (T is not None and cfg.get("task.T") != T):
            continue
        r = recall(ckpt)
        rows.append({"hash": h, "cell": cfg["model.cell"], "hidden_size": cfg["model.hidden_size"],
                     "T": cfg["task.T"], "seed": cfg["seed"], "step": res.get("step"),
                     "test_loss": res["metrics"].get("test/loss"), "baseline": res["baseline"].get("test/loss"),
                     **{k: _round(v) for k, v in r.items()}})
    return sorted(rows, key=lambda r: (r["T"], r["cell"], r["seed"]))


def _round(v):
    return [round(x, 4) for x in v] if isinstance(v, list) else round(v, 5)


def _mean(xs):
    return sum(xs) / len(xs)


def render(doc: Doc, data: dict, hashes: set, notes: list[str] = ()) -> None:
    """The report's section from the committed JSON, for the runs it reports done (`hashes`);
    `notes`: the claims file's reading of it (`recall:`), as paragraphs under the tables."""
    rows = [r for r in data["runs"] if r["hash"] in hashes]
    if not rows:
        return
    doc.h(2, "What the models recall")
    doc.p(f"Per recalled position (1 = the first symbol shown): mean cross-entropy in nats / accuracy on the "
          f"test set, mean over seeds; chance (the baseline) is ln 8 = {math.log(8):.3f} / 0.125 at every "
          f"position and 0 in the blank phase. Measured from the runs' last checkpoints by `{data['command']}` "
          "(`reports/recall.py`; numbers in `recall.json`, so the report regenerates without checkpoints).")
    n = len(rows[0]["recall_ce"])
    for T in sorted({r["T"] for r in rows}):
        at = [r for r in rows if r["T"] == T]
        table = []
        for cell in sorted({r["cell"] for r in at}, key=lambda c: [r["cell"] for r in at].index(c)):
            rs = [r for r in at if r["cell"] == cell]
            table.append([cell, len(rs), f"{_mean([r['test_loss_here'] for r in rs]):.4f}",
                          f"{_mean([r['blank_ce'] for r in rs]):.4f}"]
                         + [f"{_mean([r['recall_ce'][i] for r in rs]):.2f} / {_mean([r['recall_acc'][i] for r in rs]):.2f}"
                            for i in range(n)])
        doc.p(f"T = {T} (baseline {at[0]['baseline']:.4f}):")
        doc.table(["cell", "n", "test loss", "blank CE"] + [str(i + 1) for i in range(n)], table, "lrrr" + "r" * n)
    for text in notes:
        doc.p(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.recall", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="result store with the runs' checkpoints")
    ap.add_argument("--sweep", default="paper_copy", help="sweep whose copy runs to measure (default: paper_copy)")
    ap.add_argument("-T", "--T", type=int, default=None, dest="T", help="only runs at this task.T")
    ap.add_argument("--out", default=None, help="JSON file to write (default: print)")
    a = ap.parse_args(argv)
    command = "python -m reports.recall --store " + Path(a.store).name + f" --sweep {a.sweep}" \
        + (f" -T {a.T}" if a.T is not None else "") + (f" --out {a.out}" if a.out else "")
    data = {"format": FORMAT, "command": command, "runs": measure(a.store, a.sweep, a.T)}
    text = json.dumps({**data, "runs": []}, indent=1).replace('"runs": []', '"runs": [\n' + ",\n".join(
        "  " + json.dumps(r) for r in data["runs"]) + "\n ]") + "\n"      # one line a run
    if a.out:
        write_atomic(Path(a.out), text)
        print(f"{len(data['runs'])} runs: {a.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
