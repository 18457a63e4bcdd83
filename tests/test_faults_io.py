"""Faults of the disk and the store's files: a full disk or quota under packed and unpacked runs,
a status probe racing a claim, a kill while the CSV log rewrites its header."""
import errno
import os
from pathlib import Path

import pytest

from bench import config as C
from bench.cli import main
from bench.store import Store
from test_faults import QUICK, temp_files, tmpfs


BIG = ["task=adding", "task.T=4", "task.eval_size=16", "model.hidden_size=384", "trainer.max_steps=4", "trainer.val_every=2"]


def test_a_full_disk_under_a_packed_group_leaves_every_member_resumable(tmp_path):
    """A member's checkpoint that does not fit is no member's failure: the group raises (the sweep
    stops with exit 75) and every member stays pending, as an unpacked run does."""
    from bench.packed import run_group

    cfgs = [C.load(None, BIG + [f"seed={s}"]) for s in (0, 1)]
    with tmpfs(tmp_path / "mnt", size="3m") as mnt:
        with pytest.raises(OSError) as e:
            run_group(cfgs, mnt, wandb_mode="disabled")
        assert e.value.errno == errno.ENOSPC
        for c in cfgs:
            d = Store(mnt).run_dir(c.hash)
            assert Store(mnt).result(c.hash) is None and Store(mnt).status(c.hash) == "pending" and temp_files(d) == []


def test_an_exhausted_quota_is_a_full_disk(tmp_path, monkeypatch, capsys):
    """EDQUOT, how a full disk shows on most clusters: one line, exit 75, the run left resumable."""
    from bench import checkpoints

    def quota(obj, path):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(path))
    monkeypatch.setattr(checkpoints, "save_atomic", quota)
    code = main(["train", *QUICK, "--store", str(tmp_path / "s"), "--wandb", "disabled"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rnnbench")]
    assert code == 75 and lines == [lines[0]] and lines[0].startswith(f"rnnbench train: store {tmp_path / 's'}: no space left on device")
    h = C.load(None, QUICK).hash
    assert Store(tmp_path / "s").result(h) is None and Store(tmp_path / "s").status(h) == "pending"


def test_a_status_probe_never_makes_a_starting_run_skip_itself(tmp_path):
    """`running` (rnnbench status) takes the run's lock shared for an instant; a claim landing in
    that instant waits it out instead of reporting the run busy. A real holder still wins."""
    import fcntl
    import threading

    store = Store(tmp_path)
    lock = store.run_dir("abc") / ".lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    probe = os.open(lock, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)          # a probe, mid-flight
    threading.Timer(0.05, os.close, [probe]).start()
    with store.claim("abc") as ok:
        assert ok and store.running("abc")
        with store.claim("abc") as again:                          # held for real: busy, after its retries
            assert again is False
    assert not store.running("abc")


def test_a_kill_while_the_csv_log_widens_its_header_loses_no_row(tmp_path, monkeypatch):
    """Lightning rewrites metrics.csv in place when a column first appears (val/*, test/*): a kill
    in that write used to truncate the rows before it. bench.csv_log makes it atomic."""
    import csv

    from bench.csv_log import AtomicCSVLogger

    def logged(root):
        log = AtomicCSVLogger(save_dir=root, name="logs", version=0)
        for step, loss in enumerate([1.0, 0.5]):
            log.log_metrics({"train/loss": loss}, step=step)
            log.save()
        log.log_metrics({"val/loss": 0.7}, step=1)
        return log, Path(log.experiment.metrics_file_path)

    log, path = logged(tmp_path / "ok")
    log.save()
    rows = list(csv.DictReader(path.open(newline="")))
    assert [(r["step"], r["train/loss"], r["val/loss"]) for r in rows] == [("0", "1.0", ""), ("1", "0.5", ""), ("1", "", "0.7")]
    log, path = logged(tmp_path / "killed")
    before = path.read_bytes()

    def killed(self, rows):
        raise KeyboardInterrupt   # as a SIGKILL mid-write: nothing after this point happens
    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        log.save()
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["metrics.csv"]


def test_a_damaged_sweep_index_is_kept_aside_when_a_sweep_rebuilds_it(tmp_path, capsys):
    store = Store(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.json").write_text('{"hashes": ["abc", ')
    store.record_sweep("s", ["def"])
    assert store.sweep_hashes("s") == ["def"] and store.sweeps() == ["s"]
    assert (tmp_path / "sweeps" / "s.json.damaged").read_text() == '{"hashes": ["abc", '
    assert "damaged store file" in capsys.readouterr().err


def test_a_dead_workers_run_is_not_recorded_failed_over_a_run_another_process_started(tmp_path, monkeypatch):
    """record_exit (a worker died) writes its `failed` under the run's claim: if another process
    claims the run between its status check and its write, that run is left to it."""
    from bench.worker import record_exit

    store, cfg = Store(tmp_path), C.load(None, QUICK)
    real, held = Store.status, []

    def claimed_after_the_check(self, h):
        st = real(self, h)
        if not held:   # another process claims the run right after the check
            held.append(self.claim(h))
            assert held[0].__enter__()
        return st
    monkeypatch.setattr(Store, "status", claimed_after_the_check)
    assert record_exit(store, cfg, -9, None) == "running" and store.result(cfg.hash) is None
    held[0].__exit__(None, None, None)
    monkeypatch.setattr(Store, "status", real)
    assert record_exit(store, cfg, -9, None) == "failed"
    assert store.result(cfg.hash)["error"] == "process killed by signal 9"
