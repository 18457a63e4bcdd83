"""The committed published reports are what `python -m reports.papers` makes from the committed
raw results alone (reports/published/<name>/runs/, sweeps/): byte for byte, PNGs included
(no clock in the output, no matplotlib version in the PNG metadata; same matplotlib and fonts)."""
from __future__ import annotations

import shutil
from pathlib import Path

from reports import papers

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "reports" / "published"


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_reports_regenerate_byte_for_byte(tmp_path):
    pub = tmp_path / "published"
    shutil.copytree(PUBLISHED, pub)
    shutil.copyfile(ROOT / "README.md", tmp_path / "README.md")
    assert papers.main(["--out", str(pub), "--readme", str(tmp_path / "README.md")]) == 0
    want, got = tree(PUBLISHED), tree(pub)
    assert sorted(got.keys() - want.keys()) == [] and sorted(want.keys() - got.keys()) == []
    assert [k for k in want if got[k] != want[k]] == []
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()


def test_another_out_leaves_the_repository_readme_alone(tmp_path, monkeypatch):
    """Without --readme, only a build into reports/published rewrites the README's table."""
    pub = tmp_path / "published"
    shutil.copytree(PUBLISHED, pub)
    written = []
    monkeypatch.setattr(papers, "update_root_readme", lambda path, *a: written.append(path) or True)
    assert papers.main(["--out", str(pub), "--only", "copy"]) == 0 and written == []
