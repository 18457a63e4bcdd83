"""Write tests/config_hashes.json: the hash of every preset, reference config and sweep config.

Run once before a change that must keep hashes (python tests/record_hashes.py); test_hashes.py
checks the code against it. A sweep file edited on purpose is matched by its content digest, so
only unchanged files are held to their recorded hashes."""
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import config as C  # noqa: E402
from bench.sweep import expand  # noqa: E402

OUT = ROOT / "tests" / "config_hashes.json"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def current() -> dict:
    cfg_dir = ROOT / "bench" / "configs"
    out = {"task": {}, "model": {}, "optim": {}, "trainer": {}, "reference": {}, "sweeps": {}}
    for p in sorted((cfg_dir / "task").glob("*.yaml")):
        out["task"][p.stem] = C.load(None, [f"task={p.stem}"]).hash
    for section in ("model", "optim", "trainer"):
        for p in sorted((cfg_dir / section).glob("*.yaml")):
            out[section][p.stem] = C.load(None, ["task=copy", f"{section}={p.stem}"]).hash
    for p in sorted((cfg_dir / "reference").glob("*.yaml")):
        out["reference"][p.stem] = C.load(p).hash
    for p in sorted((ROOT / "bench" / "sweeps").glob("*.yaml")):
        if p.name.endswith(".claims.yaml"):
            continue
        _, cfgs = expand(p)
        out["sweeps"][p.stem] = {"file": digest(p), "hashes": [c.hash for c in cfgs]}
    return out


if __name__ == "__main__":
    OUT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
