"""Config loading, overrides, validation messages, hashing and the reproduce round trip."""
import subprocess
import sys

import pytest
import yaml

from bench import config as C


def load(*overrides):
    return C.load(None, list(overrides))


@pytest.mark.parametrize("overrides, message", [
    (["task=copy", "model.cell=unknown"], "model.cell: invalid value 'unknown'; allowed: rnn_tanh, rnn_relu, irnn, lstm, gru"),
    (["task=copy", "model.cell=gru", "model.peepholes=true"], "model.peepholes: not available for cell 'gru'; allowed cells: lstm"),
    (["task=copy", "task.T=0"], "task.T: invalid value 0; allowed: a number >= 1"),
    (["task=adding", "task.T=1"], "task.T: invalid value 1; allowed: a number >= 2"),
    (["task=copy", "model.hidden_size=0"], "model.hidden_size: invalid value 0; allowed: a number >= 1"),
    (["task=copy", "optim.lr=-0.1"], "optim.lr: invalid value -0.1; allowed: a number > 0"),
    (["task=copy", "optim.name=adadelta"], "optim.name: invalid value 'adadelta'; allowed: adam, rmsprop, sgd, adagrad"),
    (["task=copy", "model.colour=red"], "model.colour: unknown key; allowed: cell, hidden_size"),
    (["task=copy", "bogus=1"], "bogus: unknown key; allowed: seed, task, model, optim, trainer"),
    (["task=copy", "model.hidden_size=big"], "model.hidden_size: invalid value 'big'; allowed: int"),
    (["task=copy", "model.cell=lstm_nig", "model.input_gate=true"], "model.input_gate: cell 'lstm_nig' fixes it to False"),
    (["task=copy", "model.residual=true"], "model.residual: needs num_layers >= 2"),
    (["task=copy", "model.cell=lstm_vanilla", "model.impl=fused"], "model.impl: 'fused' not possible"),
    (["task=nope"], "task: unknown preset 'nope'; allowed: adding, "),
    (["task.name=nope"], "task.name: invalid value 'nope'; allowed: copy, adding"),
    (["model.cell=gru"], "task.name: missing; allowed: copy, adding"),
    (["seed=-1", "task=copy"], "seed: invalid value -1; allowed: a number >= 0"),
    (["task=copy", "trainer.accelerator=tpu"], "trainer.accelerator: invalid value 'tpu'; allowed: cpu, gpu, auto"),
    (["task=copy", "model.dropout=1.0"], "model.dropout: invalid value 1.0; allowed: a number < 1"),
    (["task=copy", "optim.lr_decay=0.5", "optim.plateau_factor=0.5"],
     "optim.lr_decay: conflicts with plateau_factor; allowed: one of them"),
    (["task=copy", "model.init_range=0.1", "model.recurrent_init=orthogonal"],
     "model.init_range: overrides recurrent_init='orthogonal'; allowed: one of them"),
    (["task=copy", "trainer.test_on=first"], "trainer.test_on: invalid value 'first'; allowed: last, best"),
    (["task=copy", "trainer.monitor=test/loss"], "trainer.monitor: invalid value 'test/loss'; allowed: a validation metric"),
])
def test_bad_values_give_one_line_naming_field_and_allowed(overrides, message):
    with pytest.raises(C.ConfigError) as e:
        load(*overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_config_exits_nonzero_with_one_line_and_writes_nothing(tmp_path):
    store = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "bench.cli", "train", "task=copy", "model.cell=gru",
                        "model.peepholes=true", "--store", str(store)], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rnnbench train: error: model.peepholes: not available for cell 'gru'; allowed cells: lstm")
    assert not store.exists()


def test_presets_overrides_and_seed_zero():
    cfg = load("task=adding", "task.T=30", "model.cell=gru", "seed=0", "optim.lr=1e-2")
    assert (cfg.task.name, cfg.task.T, cfg.model.cell, cfg.seed, cfg.optim.lr) == ("adding", 30, "gru", 0, 0.01)
    assert cfg.hash != load("task=adding", "task.T=30", "model.cell=gru", "seed=1", "optim.lr=1e-2").hash


def test_named_variant_fixes_switches():
    cfg = load("task=copy", "model.cell=lstm_nfg")
    assert cfg.model.peepholes is True and cfg.model.forget_gate is False
    assert load("task=copy", "model.cell=irnn").model.recurrent_init == "identity"


def test_resolved_config_round_trips_through_yaml_and_reproduce_command(tmp_path):
    cfg = load("task=copy", "task.T=7", "model.cell=lstm", "model.forget_bias=0.0", "seed=3", "optim.lr=0.003")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert C.load(path).hash == cfg.hash
    assert C.load(None, C.to_overrides(cfg)).hash == cfg.hash


def test_config_file_plus_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: adding\nmodel: {cell: gru, hidden_size: 16}\noptim: {name: rmsprop}\n")
    cfg = C.load(path, ["task.T=12", "model.hidden_size=8"])
    assert (cfg.task.name, cfg.task.T, cfg.model.cell, cfg.model.hidden_size, cfg.optim.name) == \
        ("adding", 12, "gru", 8, "rmsprop")


def test_bad_yaml_file_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: [copy\n")
    with pytest.raises(C.ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        C.load(path)


def test_synthetic_configs_keep_their_field_order():
    """The five data fields the synthetic configs share (tasks.synthetic.synthetic_fields) come
    after each family's own, as when they were written out: reproduce commands and config.yaml
    read as before (the hash does not depend on the order)."""
    from bench.config import reproduce_command

    c = C.load(None, ["task=copy", "task.T=50", "task.batch_size=20", "task.n_symbols=5"])
    assert reproduce_command(c) == "rnnbench train task.name=copy task.T=50 task.n_symbols=5 task.batch_size=20"
    assert list(c.to_dict()["task"])[:2] == ["name", "T"] and list(c.to_dict()["task"])[-1] == "train_size"
