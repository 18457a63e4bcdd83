"""Time-series family: windows, chronological splits, training-span normalisation, transforms,
naive baselines (exact values), the real presets, learning beats every baseline, one-line errors."""
import csv
import math

import lightning as L
import numpy as np
import pytest
import torch

from bench.config import ConfigError, load
from tasks.registry import task_class
from tasks.timeseries import TimeSeriesTask, sample_ends, split_bounds


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make(tmp_path, values, *overrides, extra=None):
    """A one-column CSV `v` (plus `extra` columns), rows written in reverse time order."""
    header = ["t", "v"] + list(extra or {})
    rows = [[f"{i:04d}", v] + [extra[k][i] for k in extra or {}] for i, v in enumerate(values)]
    write(tmp_path / "s.csv", header, rows[::-1])
    cfg = load(None, ["task.name=timeseries", f"task.data_dir={tmp_path}", "task.data_files.train=s.csv",
                      "task.time_column=t", "task.columns=[v]", "task.targets=[v]", *overrides])
    task = task_class("timeseries")(cfg)
    dm = task.datamodule()
    dm.setup()
    return cfg, task, dm


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", deterministic=True)


def test_registry_and_presets():
    assert task_class("timeseries") is TimeSeriesTask
    for name in ("sunspots", "msft"):
        cfg = load(None, [f"task={name}"])
        assert cfg.task.name == "timeseries" and TimeSeriesTask(cfg).primary == "test/mse"


def test_splits_are_chronological_and_windows_exact():
    assert split_bounds(100, 0.1, 0.2) == (70, 80)
    ends = sample_ends(100, window=5, horizon=3, bounds=(70, 80))
    assert ends["train"][0] == 4 and ends["train"][-1] == 66          # targets 67..69 < 70
    assert ends["validation"][0] == 69 and ends["validation"][-1] == 76  # targets 70..72 .. 77..79
    assert ends["test"][0] == 79 and ends["test"][-1] == 96             # targets 80..82 .. 97..99
    assert ends["train"].max() < ends["validation"].min() < ends["test"].min()


def test_windows_targets_normalisation_and_sort_order(tmp_path):
    values = [float(i * i % 17) for i in range(60)]
    cfg, task, dm = make(tmp_path, values, "task.window=4", "task.horizon=2", "task.season=3",
                         "task.val_fraction=0.2", "task.test_fraction=0.2")
    z = np.array(values)
    assert np.array_equal(dm.z[:, 0], z)                              # sorted by t, not file order
    assert dm.bounds == (36, 48)
    mu, sd = z[:36].mean(), z[:36].std()                              # the training span only
    assert math.isclose(dm.mu[0], mu) and math.isclose(dm.sigma[0], sd)
    x, y = dm.batch(np.array([10]))
    assert torch.allclose(x[0, :, 0], torch.tensor((z[7:11] - mu) / sd, dtype=torch.float32))
    assert torch.allclose(y[0, :, 0], torch.tensor((z[11:13] - mu) / sd, dtype=torch.float32))
    # the future never moves the scale: change every value after the training span
    _, _, dm2 = make(tmp_path, values[:36] + [1e6] * 24, "task.window=4", "task.horizon=2", "task.season=3",
                     "task.val_fraction=0.2", "task.test_fraction=0.2")
    assert dm2.mu[0] == dm.mu[0] and dm2.sigma[0] == dm.sigma[0]


def test_baselines_exact(tmp_path):
    values = [float((i * 7) % 11 + i) for i in range(50)]
    cfg, task, dm = make(tmp_path, values, "task.window=3", "task.horizon=2", "task.season=4",
                         "task.val_fraction=0.2", "task.test_fraction=0.2")
    z, s = np.array(values), dm.ends["test"]
    b = task.baseline()
    y = np.stack([z[s + 1], z[s + 2]], 1)
    pers = np.stack([z[s], z[s]], 1)
    seas = np.stack([z[s + 1 - 4], z[s + 2 - 4]], 1)
    assert math.isclose(b["test/mse_persistence"], np.mean((pers - y) ** 2))
    assert math.isclose(b["test/mae_seasonal_naive"], np.mean(np.abs(seas - y)))
    assert math.isclose(b["test/mse_mean"], np.mean((z[:30].mean() - y) ** 2))
    assert "test/mse_random_walk" not in b                           # no diff transform: persistence is it
    assert b["test/mse"] == min(v for k, v in b.items() if k.startswith("test/mse_"))


def test_log_diff_transform_and_random_walk(tmp_path):
    prices = [100 * 1.01 ** i * (1 + 0.02 * (-1) ** i) for i in range(80)]
    _, task, dm = make(tmp_path, prices, "task.transform=log_diff", "task.window=5", "task.season=5")
    r = np.diff(np.log(prices))
    assert dm.z.shape == (79, 1) and np.allclose(dm.z[:, 0], r)
    b = task.baseline()
    y = r[dm.ends["test"] + 1]
    assert math.isclose(b["test/mse_random_walk"], np.mean(y ** 2), rel_tol=1e-6)    # zero change in the price


def test_sunspots_preset_on_the_real_file(data_dir):
    cfg = load(None, ["task=sunspots"])
    task = TimeSeriesTask(cfg)
    dm = task.datamodule()
    dm.setup()
    with open(data_dir / "timeseries/sunspots_monthly.csv") as f:
        z = np.array([float(r["sunspots"]) for r in csv.DictReader(f)])
    assert dm.z.shape == (2820, 1) and np.array_equal(dm.z[:, 0], z)
    assert dm.bounds == (2256, 2538)
    b = task.baseline()
    s = dm.ends["test"]
    assert math.isclose(b["test/mse_persistence"], np.mean((z[s] - z[s + 1]) ** 2))
    assert b["test/mse"] == b["test/mse_persistence"]


def test_training_batches_depend_on_seed_and_epoch_only(tmp_path):
    values = [math.sin(i / 3) for i in range(200)]
    _, _, a = make(tmp_path, values, "task.window=8", "task.season=19", "task.batch_size=16")
    _, _, b = make(tmp_path, values, "task.window=8", "task.season=19", "task.batch_size=16")
    _, _, c = make(tmp_path, values, "task.window=8", "task.season=19", "task.batch_size=16", "seed=1")
    first = [next(iter(dm.train_dataloader()))[0] for dm in (a, b, c)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
    assert len(a.train_dataloader()) == math.ceil(len(a.ends["train"]) / 16)


def test_learns_ar2_beats_every_baseline(tmp_path):
    """An AR(2) series z_t = 1.6 z_{t-1} - 0.9 z_{t-2} + e_t: a small LSTM beats persistence,
    seasonal-naive (its ~11-step quasi-period) and the mean on the test span."""
    g = np.random.default_rng(0)
    z = [0.0, 0.0]
    for _ in range(1500):
        z.append(1.6 * z[-1] - 0.9 * z[-2] + g.normal())
    cfg, task, dm = make(tmp_path, z, "task.window=16", "task.season=11", "model.hidden_size=16",
                         "optim.lr=0.01", "task.batch_size=32")
    module = task.module(dm)
    trainer(300).fit(module, datamodule=dm)
    res = trainer(1).test(module, datamodule=dm, verbose=False)[0]
    base = task.baseline()
    assert res["test/mse"] < 0.8 * base["test/mse"], (res, base)
    assert res["test/mae"] < base["test/mae"]


@pytest.mark.parametrize("override, message", [
    (["task.columns=[price]"], "task.columns: column 'price' not in {f}; available: t, v, w"),
    (["task.time_column=date"], "task.time_column: column 'date' not in {f}; available: t, v, w"),
    (["task.transform=log"], "task.transform: log needs positive values; column 'w' has 1 values <= 0; "
                             "allowed here: none, diff"),
    (["task.window=40"], "task.window: window 40 + horizon 1 leaves no train samples in 50 rows; "
                         "allowed: smaller window/horizon or larger fractions"),
    (["task.season=40", "task.window=5"], "task.season: invalid value 40; allowed: a period shorter than the training span (40 rows)"),
])
def test_errors_are_one_line(tmp_path, override, message):
    extra = {"w": [float(i) for i in range(50)]}
    with pytest.raises(ConfigError) as e:
        make(tmp_path, [float(i + 1) for i in range(50)], "task.columns=[v, w]", *override, extra=extra)
    assert str(e.value) == message.format(f=tmp_path / "s.csv")


def test_config_errors():
    with pytest.raises(ConfigError, match=r"^task.test_fraction: val_fraction \+ test_fraction = 1; allowed: a sum < 1$"):
        load(None, ["task=sunspots", "task.val_fraction=0.5", "task.test_fraction=0.5"])
    with pytest.raises(ConfigError, match=r"^task.targets: invalid value \[\]; allowed: a non-empty list of column names$"):
        load(None, ["task=sunspots", "task.targets=[]"])
    with pytest.raises(ConfigError, match=r"^task.transform: invalid value 'sqrt'; allowed: none, log, diff, log_diff$"):
        load(None, ["task=sunspots", "task.transform=sqrt"])
