"""SLURM array tasks that take several runs (`--runs-per-task N`, slurm/array_task.py), on the real
one-node cluster (tests/test_slurm.py explains it: skip without one, fail with RNNBENCH_REQUIRE_SLURM=1).

A task's runs go one after the other through one persistent worker; every result equals a local
run's; a run that kills the worker is recorded failed and the task's other run still finishes; a
task requeued, stopped by its warning signal or cancelled and resubmitted trains only what it had
not finished, each unfinished run resuming from its checkpoint. The first tests need no cluster.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench import config as C
from bench.cli import main as cli_main
from bench.store import Store, write_json
from bench.sweep import LocalExecutor
from bench.worker import record_exit
from slurm.array_task import TaskJob
from slurm.executor import SlurmError, array_tasks, load_options, task_job
from slurm.job import RunJob
from slurm.states import job_states
from test_slurm import TINY, ckpt_step, cli, cluster, job_log, scontrol_job, sweep_file, train_rows, wait_for  # noqa: F401

DELAY = ["step_delay_s=0.5"]   # 10 steps of >= 5 s: time to hit a run mid-way (numbers unchanged)


def _cfgs(*seeds, extra=()) -> list:
    return [C.load(None, TINY + ["trainer.max_steps=10", f"seed={s}", *extra]) for s in seeds]


def _pid(store: Store, h: str) -> int:
    """The process that ran (or runs) `h`: its claim lock holds '<host> <pid>'."""
    return int((store.run_dir(h) / ".lock").read_text().split()[1])


def _job_ids(store: Store, cfgs) -> dict:
    return {c.hash: json.loads((store.run_dir(c.hash) / "slurm.json").read_text())["job_id"] for c in cfgs}


def _same_metrics(got: dict, ref: dict) -> None:
    assert got["status"] == ref["status"] == "done" and got["step"] == ref["step"]
    assert set(got["metrics"]) == set(ref["metrics"])
    for k, v in ref["metrics"].items():
        assert got["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-8), k


def _references(tmp_path: Path, cfgs) -> dict:
    """The same configs run locally, each in this process, uninterrupted."""
    from bench.train import run

    return {c.hash: run(c, tmp_path / "reference", wandb_mode="disabled") for c in cfgs}


def _done(store: Store, hashes) -> bool:
    return all(store.status(h) in ("done", "failed", "diverged") for h in hashes)


# ---------------------------------------------------------------- no cluster needed


def test_runs_are_chunked_into_tasks_groups_never_split(tmp_path):
    store = Store(tmp_path / "results")
    five = _cfgs(0, 1, 2, 3, 4)
    hashes = lambda tasks: [[[c.hash for c in u] for u in t] for t in tasks]   # noqa: E731
    h = [c.hash for c in five]
    opts = load_options(["runs_per_task=2"])
    assert hashes(array_tasks(five, store, opts)) == [[[h[0]], [h[1]]], [[h[2]], [h[3]]], [[h[4]]]]
    # packed groups of 2 (seeds only differ), 3 runs a task: a group is never split
    assert hashes(array_tasks(five, store, load_options(["runs_per_task=3"]), pack=2)) == \
        [[[h[0], h[1]]], [[h[2], h[3]], [h[4]]]]
    # auto: as many tasks as run at once
    assert [len(t) for t in array_tasks(five, store, load_options(["runs_per_task=auto", "array_parallelism=2"]))] == [3, 2]
    assert [len(t) for t in array_tasks(five, store, load_options([]))] == [1] * 5   # the default: one run a task
    ddp = C.load(None, TINY + ["trainer.devices=2", "trainer.strategy=ddp"])
    assert [len(t) for t in array_tasks([ddp, *_cfgs(7, 8)], store, opts)] == [1, 2]   # a DDP run alone
    # one unpacked run a task: RunJob, as before runs_per_task; anything more: TaskJob
    one, two = (array_tasks(five[:n], store, opts)[0] for n in (1, 2))
    assert isinstance(task_job(one, store, "s", None, False, opts, "p"), RunJob)
    job = task_job(two, store, "s", None, False, opts, "p")
    assert isinstance(job, TaskJob) and job.hashes == [[h[0]], [h[1]]]


def test_bad_runs_per_task_is_one_line(tmp_path, capsys):
    for bad in ("0", "many", "1.5", "true", "None"):
        with pytest.raises(SlurmError) as e:
            load_options([f"runs_per_task={bad}"])
        assert str(e.value).endswith("; allowed: an integer >= 1, or auto") and "runs_per_task: invalid value" in str(e.value)
        assert "\n" not in str(e.value)
    assert load_options(["partition=None", "mem_gb=None"])["partition"] is None   # Python's null, as from W&B
    for value in ("0", "x"):
        with pytest.raises(SystemExit) as e:
            cli_main(["sweep", "bench/sweeps/default.yaml", "--executor", "slurm", "--runs-per-task", value,
                      "--store", str(tmp_path)])
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
            f"argument --runs-per-task: invalid value '{value}'; allowed: an integer >= 1, or auto")
    assert cli_main(["sweep", "bench/sweeps/default.yaml", "--runs-per-task", "2", "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("rnnbench sweep: error: --runs-per-task: only with --executor slurm "
                                              "(local workers already run config after config); allowed: --executor slurm")
    assert not (tmp_path / "runs").exists()


def test_task_job_outside_slurm_isolates_a_crash(tmp_path):
    """The task's logic without a cluster: its first run's worker segfaults mid-run (SIGSEGV from
    here), that run is recorded failed, a new worker runs the second; each job kind as submitted."""
    slow, fast = _cfgs(0, 1)
    store = Store(tmp_path / "results")
    units = [[slow], [fast]]
    job = TaskJob([[c.to_dict() for c in u] for u in units], str(store.root), "t", "disabled", step_delay_s=0.5,
                  hashes=[[c.hash for c in u] for u in units])
    victims = []

    def kill_mid_run():
        wait_for(lambda: store.running(slow.hash) and ckpt_step(store, slow.hash) >= 5, 240, "a checkpoint", 0.2)
        victims.append(_pid(store, slow.hash))
        os.kill(victims[0], signal.SIGSEGV)

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        killer.start()
        out = job()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    killer.join(5)
    assert out == [{"hash": slow.hash, "status": "failed"}, {"hash": fast.hash, "status": "done"}]
    failed = store.result(slow.hash)
    assert failed["error"] == "process killed by signal 11" and failed["step"] >= 5
    assert "Fatal Python error: Segmentation fault" in (store.run_dir(slow.hash) / "run.log").read_text()
    assert _pid(store, fast.hash) not in (victims[0], os.getpid())
    _same_metrics(store.result(fast.hash), _references(tmp_path, [fast])[fast.hash])


def test_requeued_retry_task_still_reruns_the_failures_it_was_submitted_for(tmp_path, monkeypatch):
    """A --retry-failed task of two failed runs, requeued after its first attempt reran (and failed
    again) the first run only: the second's old failure, unchanged since submission, is rerun; the
    first run's new failure stands (a requeue of a retry drops no new result)."""
    store = Store(tmp_path / "results")
    a, b = _cfgs(0, 1)
    for c in (a, b):
        record_exit(store, c, -9, "t")
    job = task_job([[a], [b]], store, "t", "disabled", True, load_options(["runs_per_task=2"]), "p")
    assert isinstance(job, TaskJob) and set(job.retry_of) == {a.hash, b.hash}
    new = {**store.result(a.hash), "error": "process exited with code 1", "finished_at": "2099-01-01T00:00:00+0000"}
    write_json(store.run_dir(a.hash) / "result.json", new)       # the first attempt's result for a
    before = (store.run_dir(a.hash) / "result.json").read_bytes()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        out = job()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert out == [{"hash": a.hash, "status": "failed"}, {"hash": b.hash, "status": "done"}]
    assert (store.run_dir(a.hash) / "result.json").read_bytes() == before
    assert store.result(b.hash)["step"] == 10


# ---------------------------------------------------------------- on the cluster


@pytest.mark.slurm
def test_four_runs_in_two_tasks_equal_local_runs(cluster, tmp_path):
    sweep = sweep_file(tmp_path, "two", extra={"model.cell": {"values": ["gru", "lstm"]}})
    store_dir = tmp_path / "results"
    p = cli("sweep", str(sweep), "--executor", "slurm", "--runs-per-task", "2", "--store", str(store_dir),
            "--slurm", "time=10")
    assert p.returncode == 0 and "submitted 2 SLURM job(s)" in p.stdout, p.stdout + p.stderr
    from bench.sweep import expand

    _, cfgs = expand(sweep)
    store = Store(store_dir)
    jobs = _job_ids(store, cfgs)
    assert len(cfgs) == 4 and sorted(jobs.values()) == sorted(2 * [f"{jobs[cfgs[0].hash].split('_')[0]}_{i}"
                                                                  for i in (0, 1)]), jobs
    refs = _references(tmp_path, cfgs)   # meanwhile
    wait_for(lambda: _done(store, jobs), 480, "the four runs",
             on_timeout=lambda: job_log(store_dir, "two", next(iter(jobs.values()))))
    for c in cfgs:
        r = store.result(c.hash)
        assert r["status"] == "done", (r, job_log(store_dir, "two", jobs[c.hash]))
        _same_metrics(r, refs[c.hash])
        assert r["wandb_id"] == c.hash and r["sweep"] == "two"
        assert train_rows(store, c.hash) == train_rows(Store(tmp_path / "reference"), c.hash)
    pids = {}
    for c in cfgs:   # one worker process a task: it imported once and ran both runs
        pids.setdefault(jobs[c.hash], set()).add(_pid(store, c.hash))
    assert [len(p) for p in pids.values()] == [1, 1] and len(set.union(*pids.values())) == 2, pids
    st = cli("status", "two", "--store", str(store_dir))
    assert "4 runs: 4 done" in st.stdout, st.stdout + st.stderr


@pytest.mark.slurm
def test_worker_segfault_is_recorded_failed_and_the_task_goes_on(cluster, tmp_path):
    crash, other = _cfgs(10, 11)
    store_dir = tmp_path / "results"
    store = Store(store_dir)
    from slurm.executor import submit

    [job] = submit("crash", [crash, other], store_dir, ["time=10", "runs_per_task=2", *DELAY], "disabled")
    wait_for(lambda: store.running(crash.hash) and ckpt_step(store, crash.hash) >= 5, 300, "a first checkpoint",
             every=0.2, on_timeout=lambda: job_log(store_dir, "crash", job))
    victim = _pid(store, crash.hash)
    os.kill(victim, signal.SIGSEGV)   # the node is this machine: the worker's interpreter crashes
    wait_for(lambda: _done(store, [crash.hash, other.hash]), 300, "the task's other run",
             on_timeout=lambda: job_log(store_dir, "crash", job))
    failed = store.result(crash.hash)
    assert failed["status"] == "failed" and failed["error"] == "process killed by signal 11", failed
    assert store.result(other.hash)["status"] == "done", job_log(store_dir, "crash", job)
    assert _pid(store, other.hash) != victim
    assert set(_job_ids(store, [crash, other]).values()) == {job}
    wait_for(lambda: scontrol_job(job).get("JobState") == "COMPLETED", 60, "the task to end",
             on_timeout=lambda: job_log(store_dir, "crash", job))


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["scontrol-requeue", "sigusr1", "scancel-resubmit"])
def test_stopped_task_resumes_its_unfinished_run_only(cluster, tmp_path, how):
    """Interrupted while its second run trains: the first run's result is kept as it was, the
    second resumes from its checkpoint under the same W&B id and ends as an uninterrupted run."""
    from slurm.executor import resubmit_failed, submit

    first, second = _cfgs(20, 21)
    store_dir = tmp_path / "results"
    store = Store(store_dir)
    [job] = submit("stop", [first, second], store_dir, ["time=10", "runs_per_task=2", "signal_delay_s=5", *DELAY],
                   "offline")
    refs = _references(tmp_path, [first, second])
    wait_for(lambda: store.status(first.hash) == "done" and 5 <= ckpt_step(store, second.hash) < 10
             and store.running(second.hash), 300, "the second run's first checkpoint", every=0.2,
             on_timeout=lambda: job_log(store_dir, "stop", job))
    kept = store.result(first.hash)
    if how == "scontrol-requeue":
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    elif how == "sigusr1":
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
    else:
        subprocess.run(["scancel", job], check=True, timeout=30)
        wait_for(lambda: job_states(store, [first.hash, second.hash]) == {second.hash: "failed:cancelled"},
                 120, "the cancel", every=2, on_timeout=lambda: job_log(store_dir, "stop", job))
        [job] = resubmit_failed("stop", store_dir, ["time=10", "runs_per_task=2"], "offline")
    if how != "scancel-resubmit":
        wait_for(lambda: int(scontrol_job(job).get("Restarts", "0")) >= 1, 120, "the task to be requeued",
                 on_timeout=lambda: job_log(store_dir, "stop", job))
    wait_for(lambda: store.result(second.hash) is not None, 420, "the second run to finish",
             on_timeout=lambda: job_log(store_dir, "stop", job))
    r = store.result(second.hash)
    _same_metrics(r, refs[second.hash])
    assert r["resumed_from_step"] == 5 and r["wandb_id"] == second.hash, r
    steps = [s for s, _ in train_rows(store, second.hash)]
    assert steps == [s for s, _ in train_rows(Store(tmp_path / "reference"), second.hash)], "a step lost or repeated"
    assert store.result(first.hash) == kept and len(store.metric_files(first.hash)) == 1   # not run again
    _same_metrics(kept, refs[first.hash])


@pytest.mark.slurm
def test_packed_group_is_one_unit_of_a_task(cluster, tmp_path):
    cfgs = _cfgs(30, 31)
    sweep = sweep_file(tmp_path, "packs", seeds=(30, 31))
    store_dir = tmp_path / "results"
    p = cli("sweep", str(sweep), "--executor", "slurm", "--pack", "2", "--runs-per-task", "2", "--store",
            str(store_dir), "--slurm", "time=10")
    assert p.returncode == 0 and "submitted 1 SLURM job(s)" in p.stdout, p.stdout + p.stderr
    store = Store(store_dir)
    local = Store(tmp_path / "local")
    LocalExecutor(local, "packs", workers=1, threads=1, wandb_mode="disabled", progress=False, pack=2).run(cfgs)
    jobs = _job_ids(store, cfgs)
    wait_for(lambda: _done(store, jobs), 420, "the packed group",
             on_timeout=lambda: job_log(store_dir, "packs", next(iter(jobs.values()))))
    for c in cfgs:
        r = store.result(c.hash)
        assert r["implementation"]["packed"] == local.result(c.hash)["implementation"]["packed"] == 2, r
        _same_metrics(r, local.result(c.hash))
    assert len({_pid(store, c.hash) for c in cfgs}) == 1
