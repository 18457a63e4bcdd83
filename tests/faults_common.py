"""Shared by tests/test_faults.py and tests/test_bad_input.py: tiny run overrides and a tmpfs mount."""
import contextlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# checkpoints at steps 110 and 220 (the final one); metric rows (written as they are logged) at
# 49, 99, 109 (val), 149, 199, so a kill at step 105 leaves rows and no checkpoint
OV = ["task=adding", "task.T=5", "task.eval_size=32", "model.hidden_size=8", "trainer.max_steps=220",
      "trainer.val_every=110"]
QUICK = ["task=adding", "task.T=4", "task.eval_size=16", "model.hidden_size=4", "trainer.max_steps=20",
         "trainer.val_every=10"]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m", ro: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({got.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
