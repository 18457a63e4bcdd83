"""bench.store_copy.seed_store with damaged files on either side: one error line naming the file,
and nothing written into the working store (no run imported, no index rewritten)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import store_copy
from bench.store import Damaged, Store

CONFIG = "task: {name: copy}\nmodel: {cell: rnn_tanh}\nseed: 0\n"


def run(store: Store, h: str, status: str = "done") -> None:
    d = store.run_dir(h)
    (d / "logs" / "version_0").mkdir(parents=True)
    (d / "config.yaml").write_text(CONFIG)
    (d / "logs" / "version_0" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    (d / "result.json").write_text(json.dumps({"hash": h, "status": status}) + "\n")


def index(store: Store, name: str, hashes: list[str]) -> Path:
    path = store.root / "sweeps" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "hashes": hashes}))
    return path


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def stores(tmp_path):
    copy, work = Store(tmp_path / "copy"), Store(tmp_path / "work")
    for h in ("a1", "b2", "c3"):
        run(copy, h)
    index(copy, "s1", ["a1", "b2"])
    index(copy, "s2", ["c3"])
    run(work, "w9")
    index(work, "s1", ["w9"])
    return copy, work


def seeding_fails(copy, work, path, capsys):
    before = tree(work.root)
    with pytest.raises(Damaged) as e:
        store_copy.seed_store(copy, work)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert tree(work.root) == before                  # nothing imported, no index rewritten
    assert capsys.readouterr().err == ""              # the error is the one line


def test_seeding_works(stores):
    copy, work = stores
    assert store_copy.seed_store(copy, work) == {"imported": 3, "kept": 0, "skipped": []}
    assert work.sweep_hashes("s1") == ["w9", "a1", "b2"] and work.sweep_hashes("s2") == ["c3"]


@pytest.mark.parametrize("text", ["", '{"name": "s2", "hash', "[1, 2]", '{"hashes": "c3"}', "\xff"])
def test_a_damaged_index_in_the_copy(stores, text, capsys):
    copy, work = stores
    path = copy.root / "sweeps" / "s2.json"
    path.write_bytes(text.encode("latin-1"))
    seeding_fails(copy, work, path, capsys)


@pytest.mark.parametrize("text", ["", '{"name": "s1", "hash', '{"hashes": [1]}'])
def test_a_damaged_index_in_the_store_is_not_overwritten(stores, text, capsys):
    copy, work = stores
    path = work.root / "sweeps" / "s1.json"
    path.write_text(text)
    seeding_fails(copy, work, path, capsys)


@pytest.mark.parametrize("name", ["result.json", "config.yaml"])
@pytest.mark.parametrize("side", ["copy", "work"])
def test_a_damaged_run_file(stores, name, side, capsys):
    copy, work = stores
    if side == "work":
        run(work, "b2")
    path = (copy if side == "copy" else work).run_dir("b2") / name
    path.write_text('{"status": "do')
    seeding_fails(copy, work, path, capsys)


def test_import_names_the_damaged_file(stores, capsys):
    """python -m reports.papers --import: the one line, exit 2, the working store as it was."""
    from reports import papers

    copy, work = stores
    out = copy.root.parent / "published"
    out.mkdir()
    copy.root.rename(out / "copy")
    (out / "copy" / "sweeps" / "s2.json").write_text("{")
    before = tree(work.root)
    assert papers.main(["--store", str(work.root), "--import", "--out", str(out), "--only", "copy", "--readme", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"python -m reports.papers: error: damaged store file {out / 'copy' / 'sweeps' / 's2.json'}: not valid JSON"
    assert tree(work.root) == before


# ---- export_runs: the same checks, from the working store into the copy


def exporting_fails(work, copy, sweeps, path, capsys):
    before = tree(copy.root)
    with pytest.raises(Damaged) as e:
        store_copy.export_runs(work, copy, sweeps)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert tree(copy.root) == before                  # no run copied, no index rewritten
    assert capsys.readouterr().err == ""


@pytest.fixture
def exports(stores):
    copy, work = stores
    for h in ("a1", "b2"):
        run(work, h)
    index(work, "s1", ["w9", "a1", "b2"])
    return work, copy


def test_exporting_works(exports):
    work, copy = exports
    assert store_copy.export_runs(work, copy, ["s1", "s9"]) == {"s1": 3}
    assert copy.sweep_hashes("s1") == ["a1", "b2", "w9"]


@pytest.mark.parametrize("text", ["", '{"name": "s1", "hash', '{"hashes": [1]}'])
@pytest.mark.parametrize("side", ["source", "destination"])
def test_exporting_with_a_damaged_index(exports, text, side, capsys):
    work, copy = exports
    path = (work if side == "source" else copy).root / "sweeps" / "s1.json"
    path.write_text(text)
    exporting_fails(work, copy, ["s1"], path, capsys)


@pytest.mark.parametrize("name", ["result.json", "config.yaml"])
def test_exporting_a_damaged_run_file(exports, name, capsys):
    work, copy = exports
    path = work.run_dir("b2") / name
    path.write_text('{"status": "do')
    exporting_fails(work, copy, ["s1"], path, capsys)


def test_export_names_the_damaged_file(exports, capsys):
    """python -m reports.papers --export: the one line, exit 2, the copy as it was."""
    from reports import papers

    work, copy = exports
    out = copy.root.parent / "published"
    out.mkdir()
    copy.root.rename(out / "copy")
    index(work, "paper_copy", ["a1", "b2"])
    damaged = out / "copy" / "sweeps" / "paper_copy.json"
    damaged.write_text("{")
    before = tree(out)
    assert papers.main(["--store", str(work.root), "--export", "--out", str(out), "--only", "copy", "--readme", ""]) == 2
    assert capsys.readouterr().err.strip() == f"python -m reports.papers: error: damaged store file {damaged}: not valid JSON"
    assert tree(out) == before


@pytest.mark.parametrize("side", ["source", "destination"])
def test_exporting_with_damaged_sweep_times(exports, side, capsys):
    work, copy = exports
    (work.root / "sweep_times.txt").write_text("s1 1 2 1\n")
    path = (work if side == "source" else copy).root / "sweep_times.txt"
    path.write_bytes(b"s1 1 2 1\n\xff\n")
    exporting_fails(work, copy, ["s1"], path, capsys)
