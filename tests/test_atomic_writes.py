"""Reports, leaderboards, CSV/JSON/HTML files and figures are written by rename (bench.store.write_atomic,
reports.plots.save): a process killed or out of disk mid-write leaves the old file, never a truncated one."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.store import write_atomic

ROOT = Path(__file__).resolve().parents[1]
IN_PLACE = {"write_text", "write_bytes", "savefig", "to_csv", "dump"}   # json.dump / yaml.dump into an open file
SAVE = ("reports/plots.py", "save")   # the one savefig, into memory


def in_place_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (str(path.relative_to(ROOT)), node.name) == SAVE:
            allowed |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in allowed:
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        writes = isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax")
        opens_to_write = name in ("open", "fdopen") and writes
        if name in IN_PLACE or opens_to_write:
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return out


def test_no_report_file_is_written_in_place():
    found = [w for p in sorted((ROOT / "reports").glob("*.py")) for w in in_place_writes(p)]
    assert found == []


def test_write_atomic_text_bytes_and_mode(tmp_path):
    write_atomic(tmp_path / "a.txt", "x\n")
    write_atomic(tmp_path / "b.png", b"\x89PNG\x00")
    assert (tmp_path / "a.txt").read_text() == "x\n" and (tmp_path / "b.png").read_bytes() == b"\x89PNG\x00"
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask   # as open() would, not mkstemp's 0600
    os.chmod(tmp_path / "a.txt", 0o640)
    write_atomic(tmp_path / "a.txt", "y\n")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640            # a replaced file keeps its mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.png"]


CRASH = """
import resource, signal, sys
from pathlib import Path
from reports import papers, published_readme, plots
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG, as on a full disk
out = Path(sys.argv[1])
prog = {"name": "s", "finished": 1, "total": 2, "seeds": [0], "train_s": 1.0, "solved_stops": 0}
writers = {
    "claims.json": lambda: papers.write_claims_json(out, "s", False, prog, None, []),
    "README.md": lambda: published_readme.update_root_readme(out / "README.md", [], out),
    "fig.png": lambda: plots.save(plots.plt.figure(), out / "fig.png"),
}
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for name, write in writers.items():
    resource.setrlimit(resource.RLIMIT_FSIZE, (60, hard))
    try:
        write()
        print(name, "written")
    except OSError as e:
        print(name, "failed", e.errno)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
"""


@pytest.mark.parametrize("name", ["claims.json", "README.md", "fig.png"])
def test_a_write_cut_short_leaves_the_old_file(tmp_path, name):
    from reports.published_readme import BEGIN, END
    old = {"claims.json": "{}\n", "README.md": f"head\n{BEGIN}\nold\n{END}\n", "fig.png": "old image\n"}
    for k, v in old.items():
        (tmp_path / k).write_text(v)
    r = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert f"{name} failed" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / name).read_text() == old[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)     # no temporary file left
