"""Every test runs on CPU, offline, with one thread per process and the local data copies; GPUs
are hidden unless RNNBENCH_GPU_TESTS=1 (the `gpu` tests, tests/test_gpu.py, bench/gpu_checks.sh)."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
if os.environ.get("RNNBENCH_GPU_TESTS") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
if SHARED_DATA.is_dir():
    os.environ.setdefault("RNNBENCH_DATA", str(SHARED_DATA))


@pytest.fixture(autouse=True)
def _cpu_and_seed():
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture
def data_dir() -> Path:
    """The local copies of the real data sets; tests that read them skip without it."""
    path = Path(os.environ.get("RNNBENCH_DATA", SHARED_DATA))
    if not path.is_dir():
        pytest.skip(f"no local data copy at {path} (set RNNBENCH_DATA)")
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    """A fresh result store for one test."""
    return tmp_path / "results"


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> dict:
    """The tiny trained sweep of tests/report_sweep.py, shared by the report, leaderboard,
    gradient-flow and report-CLI tests: {"root", "store", "crashed"}."""
    import report_sweep  # after the environment above is set (it imports torch)

    return report_sweep.make(tmp_path_factory.mktemp("sweep"))


@pytest.fixture
def crash_on_step(monkeypatch):
    """crash_on_step(step): every trainer bench.train makes from now on raises RuntimeError('node lost')
    as training step `step` starts (a lost node between checkpoints); crash_on_step(None): no more."""
    import lightning as L

    import bench.train as T
    real = T.make_trainer

    def arm(step):
        class CrashAt(L.Callback):
            def on_train_batch_start(self, trainer, *_):
                if trainer.global_step == step:
                    raise RuntimeError("node lost")

        def crashing(*a, **k):
            t = real(*a, **k)
            t.callbacks.append(CrashAt())
            return t
        monkeypatch.setattr(T, "make_trainer", real if step is None else crashing)
    return arm
