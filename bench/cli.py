"""`rnnbench`: train one config, run a sweep, see its status, build reports and leaderboards."""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys

from bench.schema import ConfigError
from bench.tracking import quiet_logs

EXAMPLES = """examples:
  rnnbench train task=copy task.T=20 model.cell=gru seed=1
  rnnbench sweep bench/sweeps/default.yaml --workers 2
  rnnbench status default
  rnnbench report default --out reports/out/default
  rnnbench leaderboard default --out reports/out/default
  rnnbench vectors bench/configs/reference/imdb.yaml task.max_len=null --out imdb.w2v.txt
"""


def _count(text: str) -> int:
    """A non-negative integer option (0 = automatic)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed: an integer >= 0 (0 = automatic)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed: an integer >= 1")
    return int(text)


def _count_or_auto(text: str):
    """--pack (runs per packed group, 1 = none), --runs-per-task (runs per SLURM array task): or auto."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed: an integer >= 1, or auto")
    return int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default="results", help="result store directory (default: ./results)")


def _wandb(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb", choices=("online", "offline", "disabled"), default=None,
                   help="W&B mode (default: offline unless an API key is configured)")
    p.add_argument("--project", default="rnnbench", help="W&B project")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rnnbench", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run (or resume) one config and print its run directory")
    p.add_argument("config", nargs="?", help="YAML run config (optional)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.cell=gru task=adding")
    p.add_argument("--sweep", default=None, help="sweep name (W&B group)")
    p.add_argument("--retry-failed", action="store_true", help="rerun a run recorded as failed")
    _common(p), _wandb(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run every config of a sweep file that is not finished")
    p.add_argument("file", help="sweep YAML (W&B sweep shape)")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run")
    p.add_argument("--executor", choices=("local", "slurm"), default="local")
    p.add_argument("--workers", type=_count, default=0, help="parallel runs (default: GPUs, else CPU cores)")
    p.add_argument("--threads", type=_count, default=0, help="torch threads per run (default: cores / workers)")
    p.add_argument("--gpus-per-run", choices=("1", "all"), default=None,
                   help="local executor: GPUs a run gets (default 1); 'all': one run at a time on every GPU")
    p.add_argument("--retry-failed", action="store_true", help="rerun failed runs (resuming their checkpoints)")
    p.add_argument("--pack", type=_count_or_auto, default=1, metavar="K",
                   help="train up to K runs that differ only in seed (optim, init) as one batched model "
                        "(bench/packed.py); auto = 64 per GPU, on CPU 8 for cells with a C++ packed scan (GRU, "
                        "tanh/ReLU RNN) and none for the others (LSTMs: slower packed) (default: 1, no packing)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="train only the runs whose resolved config has KEY=VALUE (repeatable, e.g. "
                        "task.name=adding; KEY=[a,b]: any of them); the sweep still lists all its runs, the "
                        "rest stay pending")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="SLURM option over slurm/defaults.yaml (e.g. partition=gpu)")
    p.add_argument("--runs-per-task", type=_count_or_auto, default=None, metavar="N",
                   help="--executor slurm: runs per array task, run one after another by one persistent "
                        "worker that imports once (a packed group counts as its members); auto = spread "
                        "the runs over array_parallelism tasks (default: slurm option runs_per_task, 1)")
    p.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    _common(p), _wandb(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("status", help="state of every run of a sweep (or of the whole store)")
    p.add_argument("sweep", nargs="?")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="print the resolved config of a config file + overrides")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--fields", action="store_true", help="list every config field with default and allowed values")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("sample", help="generate text from a language-model checkpoint")
    p.add_argument("checkpoint", help="a run's checkpoints/last.ckpt, or a run hash in --store")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--length", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("vectors", help="train word2vec vectors on a task's training text (for task.embeddings)")
    p.add_argument("config", nargs="?", help="YAML run config whose task names the text")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. task=imdb task.max_len=null")
    p.add_argument("--out", required=True, help="output file (word2vec text format)")
    p.add_argument("--splits", default="train", help="comma-separated splits to read (default: train)")
    p.add_argument("--dim", type=_positive, default=300, help="vector size (= model.embedding_size of the runs)")
    p.add_argument("--window", type=_positive, default=5)
    p.add_argument("--min-count", type=_positive, default=5)
    p.add_argument("--epochs", type=_positive, default=5)
    p.add_argument("--sg", action="store_true", help="skip-gram (default: CBOW)")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--workers", type=_positive, default=1, help="more than 1 is faster but not reproducible")
    p.set_defaults(func=cmd_vectors)

    from reports.cli import add_parsers
    add_parsers(sub)
    return ap


def _split(config, overrides):
    """`rnnbench train model.cell=gru` has no config file: its first override lands in `config`."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config] + list(overrides)
    return config, list(overrides)


def check_store(root: str) -> None:
    """A store the command can write to: a directory, or a path that can be made one. Writes nothing:
    a missing store is probed at its nearest existing parent and made only when a run writes to it,
    so a command refused later (no SLURM cluster, a bad config) leaves no store behind."""
    import errno
    import tempfile

    if os.path.exists(root) and not os.path.isdir(root):
        raise ConfigError(f"--store {root}: not a directory")
    probe = os.path.abspath(root)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        if not os.path.isdir(probe):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"--store {root}: not writable ({e.strerror})") from None


def cmd_train(a) -> int:
    from bench import config as C
    from bench.train import check_host, run

    path, overrides = _split(a.config, a.overrides)
    cfg = C.load(path, overrides)
    check_host(cfg)
    check_store(a.store)
    from bench.packed import is_packed_checkpoint, run_group
    from bench.store import Store, check_sweep_name

    if a.sweep is not None:
        check_sweep_name(a.sweep)  # before any work; the run then joins the sweep's list in the store

    if is_packed_checkpoint(Store(a.store).checkpoint(cfg.hash)):  # left by a packed group: resume it packed
        result = run_group([cfg], a.store, a.sweep, a.wandb, a.project, a.retry_failed)[0]
    else:
        result = run(cfg, a.store, sweep=a.sweep, wandb_mode=a.wandb, project=a.project, retry_failed=a.retry_failed)

    print(f"run {cfg.hash}: {result['status']}  ->  {Store(a.store).run_dir(cfg.hash)}")
    if result.get("metrics"):
        print("  " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(result["metrics"].items())))
    if result.get("baseline"):
        verdict = {True: "beats it", False: "does not beat it"}.get(result.get("beats_baseline"), "")
        print("  baseline: " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(result["baseline"].items()))
              + (f"  ({result.get('primary')}: {verdict})" if verdict else ""))
    if result.get("error"):
        print(f"  error: {result['error']}")
    if result.get("stored") and result["status"] == "failed":
        print(f"  stored failure from {result.get('finished_at', 'an earlier run')}; rerun with --retry-failed")
    return 0 if result["status"] in ("done", "diverged", "busy") else 1


def cmd_sweep(a) -> int:
    from bench.packed import AUTO_CPU, AUTO_GPU, auto_size, groups, trains_on_gpu
    from bench.store import Store
    from bench.sweep import LocalExecutor, differences, expand, only, register

    name, every = expand(a.file, a.overrides)
    cfgs = only(name, every, a.only)
    store = Store(a.store)
    if not a.dry_run:
        check_store(a.store)
    if a.runs_per_task is not None and a.executor != "slurm":
        raise ConfigError("--runs-per-task: only with --executor slurm (local workers already run config "
                          "after config); allowed: --executor slurm")
    if a.gpus_per_run is not None and a.executor == "slurm":
        raise ConfigError("--gpus-per-run: only with --executor local (on SLURM a run gets --slurm gpus_per_run=N "
                          "GPUs a node, trainer.devices when 0); allowed: --executor local")
    gpus_per_run = a.gpus_per_run or "1"
    gpu, where = _gpu_there(a, gpus_per_run) if a.pack == "auto" else (False, "")
    pack = auto_size(gpu) if a.pack == "auto" else a.pack
    if a.dry_run:
        varying, common = differences(every)
        for c in cfgs:
            print(f"{c.hash}  {store.status(c.hash):11s}  {' '.join(varying(c))}")
        print(f"the same in every run of the sweep: {' '.join(common) or '-'}")
        print(f"{len(cfgs)} runs in sweep {name}" + (f" (--only; {len(every)} in all)" if a.only else ""))
        if a.pack != 1:   # the groups of the runs left to train, as the local executor forms them
            todo = LocalExecutor(store, name, retry_failed=a.retry_failed, progress=False).todo(cfgs)
            sizes = [len(u) for u in groups(todo, pack, store)]
            if where:
                print(f"--pack auto: {where}: {sum(trains_on_gpu(c, gpu) for c in todo)} "
                      f"runs train on GPU ({AUTO_GPU} a group), the others on CPU ({AUTO_CPU} a group for "
                      "cells with a C++ packed scan, else alone)")
            print(f"--pack {a.pack}: {sum(n for n in sizes if n > 1)} runs in {sum(n > 1 for n in sizes)} "
                  f"packed group(s), {sizes.count(1)} runs alone")
        return 0
    if a.only:   # the sweep lists all its runs; those not picked stay pending
        register(store, name, every)
    if a.executor == "slurm":
        from slurm.executor import resubmit_failed, submit

        slurm = a.slurm + ([f"runs_per_task={a.runs_per_task}"] if a.runs_per_task is not None else [])
        if a.retry_failed:
            jobs = resubmit_failed(name, a.store, slurm, a.wandb, project=a.project, pack=pack)
        else:
            jobs = submit(name, cfgs, a.store, slurm, a.wandb, project=a.project, pack=pack)
        print(f"sweep {name}: submitted {len(jobs)} SLURM job(s): {', '.join(map(str, jobs)) or 'none (all finished)'}")
        print(f"watch with: rnnbench status {name} --store {a.store}")
        return 0
    from bench.train import check_host
    from reports.report import build_report   # now: the report's code is the runs' code, even if it changes meanwhile

    for c in cfgs:  # before any run is stored
        check_host(c)
    # `kill PID` stops the sweep as Ctrl-C does, and so does SIGINT that a background start ignored
    before = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        states = LocalExecutor(store, name, a.workers, a.threads, gpus_per_run, a.wandb, a.project,
                               a.retry_failed, pack=pack).run(cfgs)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    counts = {s: list(states.values()).count(s) for s in sorted(set(states.values()))}
    print(f"sweep {name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"  (store {a.store})")
    if not a.no_report:
        out = build_report(store, [name], os.path.join(a.store, "reports", name))
        print(f"report: {out}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt   # LocalExecutor stops its workers (SIGTERM), the runs left to resume


def _gpu_there(a, gpus_per_run: str) -> tuple[bool, str]:
    """For --pack auto: whether the runs see a GPU, and why."""
    if a.executor == "slurm":   # a run sees the GPUs SLURM gives it; with 0, trainer.devices of accelerator=gpu
        from slurm.executor import load_options

        n = load_options(a.slurm)["gpus_per_run"]
        return n > 0, f"SLURM gpus_per_run={n}"
    n = _gpus()
    every = ", --gpus-per-run all (one unit at a time on every GPU)" if n and gpus_per_run == "all" else ""
    return n > 0, f"{n} GPU(s) here{every}"


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def cmd_status(a) -> int:
    from bench.store import Store

    store = Store(a.store)
    hashes = store.sweep_hashes(a.sweep) if a.sweep else store.hashes()
    states = {h: store.status(h) for h in hashes}
    try:
        from slurm.states import job_states

        states.update(job_states(store, hashes))
    except ImportError:
        pass
    rows = []
    for h in hashes:
        r = store.result(h) or {}
        damage = store.damage(h)
        c = store.config(h, quiet=True) or {"task": {"name": "?"}, "model": {"cell": "?"}, "seed": "?"}
        rows.append({"hash": h, "state": "damaged" if damage else states[h], "task": c["task"].get("name", "?"),
                     "cell": c["model"].get("cell", "?"), "seed": c.get("seed", "?"), "step": r.get("step", ""),
                     "error": damage or r.get("error") or ""})
    states = {row["hash"]: row["state"] for row in rows}
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['hash']}  {r['state']:11s} {r['task']:10s} {r['cell']:13s} seed={r['seed']:<3} "
              f"step={r['step']!s:6s} {r['error']}".rstrip())
    counts = {s: list(states.values()).count(s) for s in sorted(set(states.values()))}
    print(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def cmd_config(a) -> int:
    import yaml

    from bench import config as C

    if a.fields:
        print("\n".join(C.field_lines()))
        return 0
    path, overrides = _split(a.config, a.overrides)
    cfg = C.load(path, overrides)
    print(f"# hash {cfg.hash}")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def cmd_sample(a) -> int:
    from pathlib import Path

    from bench.store import Store
    from bench.inference import sample

    from bench.checkpoints import read_checkpoint

    path = Path(a.checkpoint)
    if not path.is_file() and "/" not in a.checkpoint and os.path.isdir(a.store):
        path = Store(a.store).checkpoint(a.checkpoint) or path
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {a.checkpoint}: no such file, nor a run hash with a checkpoint in {a.store}")
    if a.length < 1:
        raise ConfigError(f"--length: invalid value {a.length}; allowed: an integer >= 1")
    read_checkpoint(path)  # Unreadable: empty, truncated, a config file, or refused by weights_only
    print(sample(path, a.prompt, a.length, a.temperature, a.seed))
    return 0


def cmd_vectors(a) -> int:
    from bench import config as C
    from bench.word_vectors import sentences, train_vectors

    path, overrides = _split(a.config, a.overrides)
    cfg = C.load(path, overrides)
    splits = [s.strip() for s in a.splits.split(",") if s.strip()]
    sents = sentences(cfg.task, splits)
    print(f"{len(sents)} texts, {sum(map(len, sents))} tokens ({', '.join(splits)})", file=sys.stderr)
    n = train_vectors(sents, a.out, a.dim, a.window, a.min_count, a.epochs, a.sg, a.seed, a.workers)
    print(f"wrote {n} vectors of size {a.dim} to {a.out}")
    return 0


def main(argv=None) -> int:
    quiet_logs()
    a = parser().parse_args(argv)
    from bench.checkpoints import Unreadable

    try:
        return a.func(a)  # every subcommand sets its handler with set_defaults(func=...)
    except (ConfigError, FileNotFoundError, ValueError, Unreadable) as e:
        print(f"rnnbench {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnbench {a.cmd}: interrupted; the same command again resumes", file=sys.stderr)
        return 130
    except OSError as e:  # the store's disk or permissions: one line, never a traceback
        from bench.store import disk_full  # here, as the commands' modules: `--help` stays fast
        from bench.sweep import DISK_FULL  # a run stopped by a full disk stays resumable

        store = getattr(a, "store", None)
        what = "no space left on device" if disk_full(e) else (e.strerror or str(e))
        where = f"store {store}" if store else "error"
        print(f"rnnbench {a.cmd}: {where}: {what}" + (f" ({e.filename})" if e.filename else ""), file=sys.stderr)
        return DISK_FULL if disk_full(e) else 1


if __name__ == "__main__":
    sys.exit(main())
