"""Pixel-by-pixel classification: scikit-learn digits splits and scaling, sequential and permuted
orders (permutation fixed by data_seed), the hub path (MNIST shape) on a stand-in data set,
majority baseline, learning beats it, one-line errors."""
import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bench.config import ConfigError, load
from tasks.pixels import PixelTask, permutation
from tasks.registry import task_class


def make(*overrides):
    cfg = load(None, list(overrides))
    task = task_class(cfg.task.name)(cfg)
    dm = task.datamodule()
    dm.setup()
    return cfg, task, dm


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", deterministic=True)


def test_registry_and_presets():
    assert task_class("pixels") is PixelTask
    for name, order, ds in (("digits", "sequential", "sklearn:digits"), ("pdigits", "permuted", "sklearn:digits"),
                            ("mnist", "sequential", "ylecun/mnist"), ("pmnist", "permuted", "ylecun/mnist")):
        cfg = load(None, [f"task={name}"])
        assert (cfg.task.name, cfg.task.order, cfg.task.dataset) == ("pixels", order, ds)
    assert PixelTask.primary == "test/acc" and PixelTask.mode == "max"


def test_digits_splits_scaling_and_orders():
    _, task, seq = make("task=digits")
    x, y = seq.data["train"]
    assert x.shape == (1293, 64, 1) and len(seq.data["validation"][1]) == 144 and len(seq.data["test"][1]) == 360
    assert 0 <= x.min() and x.max() == 1 and seq.num_classes == 10
    digits = load_digits()
    rows = {tuple(r): t for r, t in zip(digits.data / 16, digits.target)}
    assert all(rows[tuple(img.tolist())] == lab for img, lab in zip(x[:50, :, 0].double(), y[:50].tolist()))
    _, _, perm = make("task=pdigits")
    pi = permutation(64, "permuted", 1234)
    assert sorted(pi.tolist()) == list(range(64)) and not torch.equal(pi, torch.arange(64))
    assert torch.equal(perm.data["test"][0], seq.data["test"][0][:, pi])        # x_t = img[pi(t)]
    _, _, other_seed = make("task=pdigits", "seed=7")
    assert torch.equal(other_seed.perm, perm.perm)                               # model seed: same order, same split
    assert torch.equal(other_seed.data["test"][1], perm.data["test"][1])
    _, _, other_data = make("task=pdigits", "task.data_seed=99")
    assert not torch.equal(other_data.perm, perm.perm)
    assert not torch.equal(other_data.data["test"][1], perm.data["test"][1])
    base = task.baseline()
    y_test = seq.data["test"][1]
    assert base["test/acc"] == pytest.approx(float((y_test == seq.majority()).float().mean()))
    assert base["test/acc"] < 0.15


def test_hub_path_with_images(monkeypatch):
    """A hub id goes through datasets.load_dataset; PIL images are flattened (the MNIST path)."""
    import datasets
    from PIL import Image

    g = np.random.default_rng(0)

    def fake(name, config=None, split=None, **_):
        assert name == "ylecun/mnist"
        imgs = [Image.fromarray(g.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(20)]
        ds = datasets.Dataset.from_dict({"image": imgs, "label": [i % 3 for i in range(20)]})
        return ds.cast_column("image", datasets.Image())

    monkeypatch.setattr(datasets, "load_dataset", fake)
    _, task, dm = make("task=pmnist", "task.batch_size=4")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 784, 1) and 0 <= x.min() and x.max() <= 1 and dm.num_classes == 3
    assert len(dm.data["train"][1]) == 18 and len(dm.data["validation"][1]) == 2
    with pytest.raises(ConfigError) as e:
        make("task=mnist", "task.image_column=pixels")
    assert str(e.value) == "task.image_column: column 'pixels' not in ylecun/mnist[train]; available: image, label"


def test_learns_digits_beats_majority():
    """A GRU 32 reading the 64 pixels one by one beats the majority class by far in 300 steps."""
    cfg, task, dm = make("task=digits", "model.cell=gru", "model.hidden_size=32", "optim.lr=0.01")
    module = task.module(dm)
    trainer(300).fit(module, datamodule=dm)
    acc = trainer(1).test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    assert acc > task.baseline()["test/acc"] + 0.4, acc


def test_errors_are_one_line():
    with pytest.raises(ConfigError) as e:
        make("task=digits", "task.dataset=sklearn:faces")
    assert str(e.value) == "task.dataset: invalid value 'sklearn:faces'; allowed: sklearn:digits or a hub id"
    with pytest.raises(ConfigError) as e:
        load(None, ["task=digits", "task.order=spiral"])
    assert str(e.value) == "task.order: invalid value 'spiral'; allowed: sequential, permuted"
