"""One run on two devices under SLURM (one task per device, strategy ddp, gloo on CPU), on the real
cluster: it trains, and a rank 0 that finds the run busy takes its other rank down with it instead
of leaving it in DDP's rendezvous (bench/ranks.py)."""
from __future__ import annotations

import json
import subprocess

from bench.store import Store
from bench.sweep import expand
from test_slurm import cli, cluster, job_log, sweep_file, wait_for  # noqa: F401 (cluster: a fixture)

DDP = {"trainer.devices": {"value": 2}, "trainer.strategy": {"value": "ddp"}}


def _queued(job: str) -> bool:
    return bool(subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=30).stdout.strip())


def test_a_ddp_run_whose_rank_0_finds_it_busy_ends_then_trains_when_free(cluster, tmp_path):
    sweep = sweep_file(tmp_path, "ddp", DDP, seeds=(0,))
    store_dir = tmp_path / "results"
    store = Store(store_dir)
    (h,) = [c.hash for c in expand(sweep)[1]]
    # submitted held, so that the claim below is taken before the job starts
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store_dir), "--slurm", "time=10",
            "--slurm", "sbatch.hold=true")
    assert p.returncode == 0, p.stderr
    job = json.loads((store.run_dir(h) / "slurm.json").read_text())["job_id"]
    with store.claim(h) as mine:   # another job trains it
        assert mine
        subprocess.run(["scontrol", "release", job], check=True, timeout=30)
        # before the fix rank 1 waited in DDP's rendezvous until the time limit
        wait_for(lambda: not _queued(job), 180, f"job {job} to end with its run busy",
                 on_timeout=lambda: (subprocess.run(["scancel", job]), job_log(store_dir, "ddp", job))[1])
    assert store.result(h) is None and "Initializing distributed" not in job_log(store_dir, "ddp", job)
    p = cli("sweep", str(sweep), "--executor", "slurm", "--store", str(store_dir), "--slurm", "time=10")
    assert p.returncode == 0 and "submitted 1" in p.stdout, p.stdout + p.stderr
    job = json.loads((store.run_dir(h) / "slurm.json").read_text())["job_id"]
    wait_for(lambda: store.status(h) in ("done", "failed", "diverged"), 300, "the DDP run to finish",
             on_timeout=lambda: job_log(store_dir, "ddp", job))
    r = store.result(h)
    assert r["status"] == "done" and r["step"] == 10 and r["device"] == "cpu x2", (r, job_log(store_dir, "ddp", job))
    script = next((store_dir / "slurm" / "ddp").glob(f"{job.split('_')[0]}_submission.sh")).read_text()
    assert "--kill-on-bad-exit=1" in script   # a dead rank takes the others down


def test_rank_0s_decision_is_per_job_attempt_and_a_missing_one_is_one_line(tmp_path, monkeypatch):
    import pytest
    from bench.ranks import tell, told

    for var in ("SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "SLURM_PROCID", "RANK",
                "LOCAL_RANK"):   # e.g. pytest under srun
        monkeypatch.delenv(var, raising=False)
    assert told(tmp_path, "abc", wait_s=0) is True   # not a multi-task SLURM step: nothing to wait for
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    tell(tmp_path, "abc", False)
    assert told(tmp_path, "abc") is False
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")   # the requeued attempt never reads the first one's
    with pytest.raises(RuntimeError) as e:
        told(tmp_path, "abc", wait_s=0.3)
    assert str(e.value).startswith("rank 0: rank 0 did not say within 0.3 s whether it claimed run abc (")
    tell(tmp_path, "abc", True)    # rank 0 starts fit; a 'not claimed' on its way out changes nothing
    tell(tmp_path, "abc", False)
    assert told(tmp_path, "abc") is True and not (tmp_path / "runs").exists()
    monkeypatch.setenv("SLURM_PROCID", "1")   # a rank > 0 never decides
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    tell(tmp_path, "abc", True)
    assert not list((tmp_path / ".ranks").glob("abc.77.2.*"))
