"""`rnnbench sweep --executor slurm` against a real SLURM cluster (never a fake one).

Bring one up on this machine with `slurm/local_cluster.sh up` (as root). Without a reachable
cluster (`sinfo` fails) the cluster tests skip with the reason; with RNNBENCH_REQUIRE_SLURM=1 (CI)
they fail instead. The slower ones are marked `slurm`.

The jobs run the tiny adding task; `step_delay_s` (a test aid: a sleep after each training step,
numbers unchanged) stretches a run so it can be interrupted mid-way.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import config as C
from bench.store import Store

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = os.environ.get("RNNBENCH_REQUIRE_SLURM") == "1"
TINY = ["task=adding", "task.T=10", "task.batch_size=8", "task.eval_size=16", "model.cell=gru",
        "model.hidden_size=8", "trainer.val_every=5"]


def _no_slurm_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo not found"
    try:
        p = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        return f"sinfo failed: {lines[-1] if lines else p.returncode}"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _no_slurm_reason()
    if reason:
        msg = f"no SLURM cluster reachable ({reason}); start one with: slurm/local_cluster.sh up"
        if REQUIRE:
            pytest.fail(msg + "  [RNNBENCH_REQUIRE_SLURM=1: not skipping]")
        pytest.skip(msg)


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def sweep_file(tmp_path: Path, name: str, extra: dict | None = None, seeds=(0, 1)) -> Path:
    params = {"task": {"value": "adding"}, "task.T": {"value": 10}, "task.batch_size": {"value": 8},
              "task.eval_size": {"value": 16}, "model.cell": {"value": "gru"}, "model.hidden_size": {"value": 8},
              "trainer.max_steps": {"value": 10}, "trainer.val_every": {"value": 5},
              "seed": {"values": list(seeds)}}
    params.update(extra or {})
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "method": "grid", "parameters": params}))
    return path


def scontrol_job(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def wait_for(pred, timeout: float, what: str, every: float = 1.0, on_timeout=None):
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}. {detail}")


def job_log(store: Path, sweep: str, job: str) -> str:
    """The job's stderr (submitit log) for failure messages."""
    logs = sorted((store / "slurm" / sweep).glob(f"{job}_*log.err"))
    return "\n".join(p.read_text()[-3000:] for p in logs) or "(no job log)"


def ckpt_step(store: Store, h: str) -> int:
    import torch

    ckpt = store.checkpoint(h)
    if ckpt is None:
        return -1
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # being replaced right now
        return -1


def train_rows(store: Store, h: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["train/loss"])) for r in store.metrics(h) if "train/loss" in r]


# ---------------------------------------------------------------- bad input (mostly no cluster needed)


def test_options_validation():
    from slurm.executor import SlurmError, load_options

    opts = load_options(["partition=gpu", "time=30", "sbatch.reservation=x", "mem_gb=8"])
    assert opts["partition"] == "gpu" and opts["time"] == 30 and opts["sbatch"] == {"reservation": "x"}
    example = load_options([f"config={ROOT / 'slurm' / 'example_gpu_cluster.yaml'}", "time=10"])
    assert example["partition"] == "gpu" and example["gpus_per_run"] == 1 and example["time"] == 10
    for bad, msg in (("paritition=gpu", "unknown key"), ("time=0", ">= 1"), ("time=abc", "allowed: int"),
                     ("signal=HUP", "allowed: USR1"), ("config=/nonexistent.yaml", "not found")):
        with pytest.raises(SlurmError, match=msg) as e:
            load_options([bad])
        assert "\n" not in str(e.value)


def test_no_cluster_or_no_submitit_gives_one_line(tmp_path):
    sweep = sweep_file(tmp_path, "nocluster")
    store = tmp_path / "results"
    # no controller: point the SLURM clients at a config that does not exist
    env = dict(os.environ, SLURM_CONF=str(tmp_path / "none.conf"))
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store), env=env, timeout=120)
    assert p.returncode != 0
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "slurm" in p.stderr and ("sinfo" in p.stderr or "SLURM" in p.stderr), p.stderr
    assert not store.exists()
    # submitit missing: a shadow package that fails to import, first on the path
    shadow = tmp_path / "shadow" / "submitit"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named submitit')\n")
    env = dict(os.environ, PYTHONPATH=f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store), env=env, timeout=120)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "submitit" in p.stderr, p.stderr
    assert not store.exists()


def test_bad_partition_one_line_store_untouched(cluster, tmp_path):
    sweep = sweep_file(tmp_path, "badpart")
    store = tmp_path / "results"
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store), "--slurm", "partition=no_such_part")
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "unknown partition 'no_such_part'" in lines[0] and "available:" in lines[0]
    assert not store.exists()
    # an existing store is left exactly as it was, too
    (store / "runs").mkdir(parents=True)
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    # sbatch itself rejects this one (no node has that much memory)
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store), "--slurm", "mem_gb=100000")
    assert p.returncode != 0
    assert len(p.stderr.strip().splitlines()) == 1 and "sbatch rejected" in p.stderr, p.stderr
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == before


# ---------------------------------------------------------------- on the cluster


@pytest.mark.slurm
def test_sweep_array_lands_in_store(cluster, tmp_path):
    sweep = sweep_file(tmp_path, "arr")
    store_dir = tmp_path / "results"
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store_dir), "--slurm", "time=10")
    assert p.returncode == 0, p.stderr
    from bench.sweep import expand

    name, cfgs = expand(sweep)
    store = Store(store_dir)
    jobs = {c.hash: json.loads((store.run_dir(c.hash) / "slurm.json").read_text())["job_id"] for c in cfgs}
    array_ids = {j.split("_")[0] for j in jobs.values()}
    assert len(array_ids) == 1 and sorted(j.split("_")[1] for j in jobs.values()) == ["0", "1"], jobs
    assert set(store.sweep_hashes("arr")) == set(jobs)
    wait_for(lambda: all(store.status(h) in ("done", "failed", "diverged") for h in jobs), 420, "both runs to finish",
             on_timeout=lambda: job_log(store_dir, "arr", next(iter(array_ids))))
    for h in jobs:
        r = store.result(h)
        assert r["status"] == "done", (r, job_log(store_dir, "arr", jobs[h]))
        assert r["step"] == 10 and "test/loss" in r["metrics"] and r["sweep"] == "arr"
    # status shows them done; submitting again finds nothing to do
    st = cli("status", "arr", "--store", str(store_dir))
    assert st.returncode == 0 and "2 runs: 2 done" in st.stdout, st.stdout + st.stderr
    again = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store_dir))
    assert again.returncode == 0 and "submitted 0" in again.stdout, again.stdout + again.stderr


def _reference(tmp_path, overrides) -> dict:
    """The same config run locally without interruption."""
    from bench.train import run

    cfg = C.load(None, overrides)
    return run(cfg, tmp_path / "reference", wandb_mode=os.environ.get("WANDB_MODE", "offline"))


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["scontrol-requeue", "sigusr1"])
def test_interrupted_job_resumes_with_same_metrics(cluster, tmp_path, how):
    """`scontrol requeue` (SLURM sends SIGTERM and requeues) or SIGUSR1 (the job stops at a batch
    boundary and requeues itself): the run resumes from its checkpoint, under the same W&B id,
    and ends with the metrics of an uninterrupted run; no logged step is lost or repeated."""
    from slurm.executor import submit

    overrides = TINY + ["trainer.max_steps=40", "seed=3"]
    cfg = C.load(None, overrides)
    h = cfg.hash
    store_dir = tmp_path / "results"
    store = Store(store_dir)
    [job] = submit("rq", [cfg], store_dir, ["time=10", "step_delay_s=0.4", "signal_delay_s=5"], None)
    ref = _reference(tmp_path, overrides)   # meanwhile, the uninterrupted run
    assert ref["status"] == "done"
    # interrupt once the first checkpoint is on disk and well before the end
    wait_for(lambda: 5 <= ckpt_step(store, h) < 30 and store.running(h), 300, "a first checkpoint",
             every=0.3, on_timeout=lambda: job_log(store_dir, "rq", job))
    if how == "scontrol-requeue":
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    else:
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
    wait_for(lambda: int(scontrol_job(job).get("Restarts", "0")) >= 1, 120, "the job to be requeued",
             on_timeout=lambda: job_log(store_dir, "rq", job))
    wait_for(lambda: store.result(h) is not None, 420, "the requeued run to finish",
             on_timeout=lambda: job_log(store_dir, "rq", job))
    r = store.result(h)
    assert r["status"] == "done", (r, job_log(store_dir, "rq", job))
    assert r["resumed_from_step"] is not None and 5 <= r["resumed_from_step"] < 40, r
    assert r["step"] == ref["step"] == 40
    assert set(r["metrics"]) == set(ref["metrics"])
    for k, v in ref["metrics"].items():
        assert r["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert r["wandb_id"] == ref["wandb_id"] == h
    assert len(store.metric_files(h)) >= 2   # two attempts logged
    rows, ref_rows = train_rows(store, h), train_rows(Store(tmp_path / "reference"), h)
    steps = [s for s, _ in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    assert steps == [s for s, _ in ref_rows], "a step was lost"
    for (_, a), (_, b) in zip(rows, ref_rows):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


@pytest.mark.slurm
def test_time_limit_reported_failed_then_resubmitted(cluster, tmp_path):
    """A job killed by its 2-minute limit (its requeue budget is 0) shows as failed:timeout and
    keeps its checkpoint; resubmit_failed sends that run alone, and it resumes and finishes."""
    from slurm.executor import resubmit_failed, submit
    from slurm.states import job_states

    cfg_ok = C.load(None, TINY + ["trainer.max_steps=10", "seed=5"])
    cfg_slow = C.load(None, TINY + ["trainer.max_steps=100", "seed=6"])
    store_dir = tmp_path / "results"
    store = Store(store_dir)
    # the slow one cannot finish in 2 minutes at 2 s a step. Not 1 minute: SLURM may send the warning
    # signal up to 60 s early, which with a 1-minute limit can be before the handler is installed
    jobs = submit("tl", [cfg_ok], store_dir, ["time=5"], None)
    jobs += submit("tl", [cfg_slow], store_dir, ["time=2", "step_delay_s=2", "max_requeues=0",
                                                  "signal_delay_s=30"], None)
    slow_job = jobs[1]
    wait_for(lambda: job_states(store, [cfg_slow.hash]).get(cfg_slow.hash, "").startswith("failed:"), 240,
             "the time limit to end the slow job", every=2, on_timeout=lambda: job_log(store_dir, "tl", slow_job))
    assert job_states(store, [cfg_slow.hash])[cfg_slow.hash] == "failed:timeout"
    assert scontrol_job(slow_job).get("JobState") == "TIMEOUT"
    assert store.result(cfg_slow.hash) is None and store.status(cfg_slow.hash) == "interrupted"
    stopped_at = ckpt_step(store, cfg_slow.hash)
    assert stopped_at >= 5
    st = cli("status", "tl", "--store", str(store_dir))
    assert "failed:timeout" in st.stdout, st.stdout + st.stderr
    wait_for(lambda: store.status(cfg_ok.hash) == "done", 300, "the other run",
             on_timeout=lambda: job_log(store_dir, "tl", jobs[0]))
    # only the failed run goes again, with a longer limit
    again = resubmit_failed("tl", store_dir, ["time=10"], None)
    assert len(again) == 1 and again[0] != slow_job
    info = json.loads((store.run_dir(cfg_slow.hash) / "slurm.json").read_text())
    assert [j["job_id"] for j in info["jobs"]] == [slow_job, again[0]]
    assert json.loads((store.run_dir(cfg_ok.hash) / "slurm.json").read_text())["job_id"] == jobs[0]
    wait_for(lambda: store.result(cfg_slow.hash) is not None, 420, "the resubmitted run",
             on_timeout=lambda: job_log(store_dir, "tl", again[0]))
    r = store.result(cfg_slow.hash)
    assert r["status"] == "done" and r["step"] == 100, r
    assert r["resumed_from_step"] == stopped_at
    assert job_states(store, [cfg_slow.hash, cfg_ok.hash]) == {}   # finished: the store's status stands
    assert resubmit_failed("tl", store_dir, [], None) == []


def test_ddp_spawn_refused_before_anything_is_written(tmp_path):
    from slurm.executor import SlurmError, submit

    cfg = C.load(None, TINY + ["trainer.max_steps=10", "trainer.devices=2", "trainer.strategy=ddp_spawn"])
    with pytest.raises(SlurmError, match="ddp_spawn cannot run under SLURM"):
        submit("spawn", [cfg], tmp_path / "results", [], None)
    assert not (tmp_path / "results").exists()


@pytest.mark.slurm
def test_a_failed_run_whose_retry_is_queued_is_not_resubmitted_again(cluster, tmp_path, monkeypatch):
    """resubmit_failed twice while the first retry still waits in the queue (the node is full):
    the second sends nothing, so a failed run never gets two retry jobs."""
    import lightning as L
    import bench.train as T
    from slurm.executor import resubmit_failed

    cfg = C.load(None, TINY + ["trainer.max_steps=10", "seed=7"])
    store_dir = tmp_path / "results"
    real = T.make_trainer

    class Crash(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            raise RuntimeError("node lost")
    monkeypatch.setattr(T, "make_trainer", lambda *a, **k: _with_callback(real(*a, **k), Crash()))
    assert T.run(cfg, store_dir, sweep="rf", wandb_mode="disabled")["status"] == "failed"
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=30).stdout.split()[0]
    blocker = subprocess.run(["sbatch", "--parsable", f"--cpus-per-task={cpus.rstrip('+')}", "--time=5",
                              f"--output={tmp_path}/blocker.out", "--wrap=sleep 300"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    jobs = []
    try:
        wait_for(lambda: scontrol_job(blocker).get("JobState") == "RUNNING", 60, "the blocking job to start")
        # a live job that carried the run before it failed (say a multi-run task going on) is no retry
        (store_dir / "runs" / cfg.hash / "slurm.json").write_text(json.dumps(
            {"job_id": blocker, "jobs": [{"job_id": blocker, "sweep": "rf", "submitted_at": "2026-01-01T00:00:00+0000"}]}))
        jobs = resubmit_failed("rf", store_dir, ["time=5"], None)
        assert len(jobs) == 1 and scontrol_job(jobs[0]).get("JobState") == "PENDING"
        assert resubmit_failed("rf", store_dir, ["time=5"], None) == []
        assert Store(store_dir).status(cfg.hash) == "failed"      # the retry has not started
    finally:
        subprocess.run(["scancel", blocker, *jobs], timeout=30)


def _with_callback(trainer, callback):
    trainer.callbacks.append(callback)
    return trainer
