"""Every preset, reference config and (unchanged) sweep config keeps the hash recorded in
tests/config_hashes.json: moving code or adding a config field must not re-key stored runs."""
import json
from dataclasses import fields

import pytest

from bench import config as C
from record_hashes import OUT, current

RECORDED = json.loads(OUT.read_text())
NOW = current()


@pytest.mark.parametrize("section", ["task", "model", "optim", "trainer", "reference"])
def test_preset_hashes_unchanged(section):
    for name, h in RECORDED[section].items():
        assert NOW[section].get(name) == h, f"{section}/{name}.yaml: hash {NOW[section].get(name)} != recorded {h}"


def test_sweep_hashes_unchanged():
    for name, rec in RECORDED["sweeps"].items():
        now = NOW["sweeps"].get(name)
        if now is None or now["file"] != rec["file"]:
            continue  # the sweep file itself was edited or removed on purpose
        assert now["hashes"] == rec["hashes"], f"bench/sweeps/{name}.yaml: config hashes changed"


def test_new_field_at_default_leaves_hash(monkeypatch):
    """A field marked new=True is out of the hash at its default and in it otherwise."""
    cfg = C.load(None, ["task=copy"])
    f = next(f for f in fields(cfg.optim) if f.name == "momentum")
    view = C.hash_view(cfg)
    assert "momentum" in view["optim"]
    meta = dict(f.metadata, new=True)
    monkeypatch.setattr(f, "metadata", meta)
    assert "momentum" not in C.hash_view(cfg)["optim"]
    cfg.optim.momentum = 0.5
    assert C.hash_view(cfg)["optim"]["momentum"] == 0.5
