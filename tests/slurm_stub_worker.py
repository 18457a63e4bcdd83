"""A multi-run task's worker (`python -m slurm_stub_worker`, tests/test_slurm_signals.py) whose
runs fail as a stop makes them fail (W&B's service gone: "Connection lost") at once, no training.
RNNBENCH_STUB: `exit`: SIGTERM comes outside fit after the failure is recorded (the worker exits
143); `fit`: it comes inside fit (a Lightning-like handler chains to ours), then the run fails;
`lightning`: it comes inside fit, then Lightning's fit loop raises SIGTERMException (a SystemExit
without a code), as Lightning 2.6 does."""
import os
import signal
import sys

from lightning.pytorch.utilities.exceptions import SIGTERMException

import bench.worker
from bench.store import Store, write_json
from slurm import array_task


def run(cfg, store_root, **kw):
    failed = {"hash": cfg.hash, "status": "failed", "error": "CommError: Connection lost"}
    if os.environ["RNNBENCH_STUB"] in ("fit", "lightning"):
        ours = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda s, f: ours(s, f))   # as Lightning's, inside trainer.fit
        os.kill(os.getpid(), signal.SIGTERM)
        signal.signal(signal.SIGTERM, ours)
    if os.environ["RNNBENCH_STUB"] == "lightning":
        raise SIGTERMException
    write_json(Store(store_root).run_dir(cfg.hash) / "result.json", failed)
    if os.environ["RNNBENCH_STUB"] == "exit":
        os.kill(os.getpid(), signal.SIGTERM)
    return failed


bench.worker.run = run

if __name__ == "__main__":
    sys.exit(array_task.main())
