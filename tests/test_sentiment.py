"""Sentiment family: datamodules on slices of the real SST-2 / IMDB files, padding invariance,
learning, bring-your-own-data by config only, errors, vocabulary in checkpoints."""
import csv

import lightning as L
import pytest
import torch

from bench.config import ConfigError, load
from tasks.registry import task_class
from tasks.sentiment import SentimentData, SentimentTask
from tasks.text import Vocab

SMALL = ["model.hidden_size=16", "model.embedding_size=16", "model.bidirectional=true"]


def make(*overrides):
    cfg = load(None, list(overrides))
    task = task_class(cfg.task.name)(cfg)
    return cfg, task, task.datamodule()


def trainer(steps: int, **kw) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", deterministic=True, **kw)


def test_registry_and_presets():
    assert task_class("sentiment") is SentimentTask
    for name in ("sst2", "imdb"):
        cfg = load(None, [f"task={name}"])
        assert cfg.task.name == "sentiment"
        assert SentimentTask(cfg).primary == "test/acc" and SentimentTask.mode == "max"


def test_sst2_datamodule(data_dir):
    cfg, task, dm = make("task=sst2", "task.max_train=400", "task.max_eval=120", *SMALL)
    dm.setup()
    assert [len(dm.examples[s]) for s in ("train", "validation", "test")] == [400, 120, 120]
    train_tokens = {w for line in (data_dir / "sentiment/sst2/stsa.binary.train").read_text().splitlines()[:400]
                    for w in line.split()[1:]}
    word = dm.vocabs["word"]
    assert set(word.itos[2:]) == train_tokens                      # vocabulary from train only
    assert dm.vocabs["label"].itos == ["0", "1"]
    assert any(i == word.unk_id for e in dm.examples["test"] for i in e["ids"])
    ids, lengths, y = next(iter(dm.train_dataloader()))
    assert ids.shape[0] == lengths.shape[0] == y.shape[0] == 32
    mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
    assert (ids[~mask] == word.pad_id).all() and (ids[mask] != word.pad_id).all()
    base = task.baseline()
    assert set(base) == {"test/acc", "test/f1"} and 0.3 < base["test/acc"] < 0.7


def test_imdb_datamodule_carves_validation_by_data_seed(data_dir):
    over = ["task=imdb", "task.max_train=300", "task.max_eval=50", "task.max_len=50", *SMALL]
    _, _, a = make(*over, "seed=1")
    _, _, b = make(*over, "seed=2")
    _, _, c = make(*over, "task.data_seed=99")
    for dm in (a, b, c):
        dm.setup()
    assert a.examples["validation"] == b.examples["validation"]    # run seed does not move eval data
    assert a.examples["validation"] != c.examples["validation"]    # data seed does
    assert max(a.lengths["train"]) <= 50 and len(a.examples["test"]) == 50
    assert {e["label"] for e in a.examples["test"]} == {0, 1}      # random subsample of a sorted file


@pytest.mark.parametrize("pool", ["last", "max", "mean"])
@pytest.mark.parametrize("impl", ["auto", "custom"])
def test_padding_never_changes_a_result(tmp_path, pool, impl):
    (tmp_path / "d.txt").write_text("1 a b c d e f g\n0 b c\n1 a\n0 c d e f g a b c d e\n")
    cfg, task, dm = make("task.name=sentiment", f"task.data_dir={tmp_path}", "task.data_files.train=d.txt",
                         "task.data_files.validation=d.txt", "task.data_files.test=d.txt", f"task.pool={pool}",
                         f"model.impl={impl}", "model.num_layers=2", *SMALL)
    module = task.module(dm).eval()
    items = dm.examples["train"]
    batch = dm.collate(items)
    with torch.no_grad():
        together = module(batch[0], batch[1])
        alone = torch.cat([module(*dm.collate([e])[:2]) for e in items])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_learns_sst2_beats_majority(data_dir):
    """A small BiLSTM on 2,000 SST-2 sentences beats the majority class on 300 dev sentences."""
    cfg, task, dm = make("task=sst2", "task.max_train=2000", "task.max_eval=300", "task.pool=max",
                         "model.hidden_size=32", "model.embedding_size=32", "model.bidirectional=true",
                         "optim.lr=0.005")
    module = task.module(dm)
    trainer(150).fit(module, datamodule=dm)
    dm.examples["test"], dm.lengths["test"] = dm.examples["validation"], dm.lengths["validation"]
    acc = trainer(1).test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    majority = max(sum(e["label"] == k for e in dm.examples["test"]) for k in (0, 1)) / 300
    assert acc > majority + 0.05, (acc, majority)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "stars"])
        w.writerows(rows)


def test_bring_your_own_data(tmp_path):
    """A user's CSV with other column names and three string labels, by config only; the model
    learns it and the vocabularies ride in a checkpoint loadable with weights_only=True."""
    g = torch.Generator().manual_seed(0)
    cues = {"pos": "great", "neg": "awful", "mid": "okay"}
    filler = ["the", "movie", "was", "a", "plot", "actors", "and", "it"]

    def rows(n):
        out = []
        for i in range(n):
            lab = list(cues)[i % 3]
            words = [filler[int(j)] for j in torch.randint(0, len(filler), (int(torch.randint(2, 9, (1,), generator=g)),), generator=g)]
            words.insert(int(torch.randint(0, len(words) + 1, (1,), generator=g)), cues[lab])
            out.append([" ".join(words).capitalize() + "!", lab])
        return out

    write_csv(tmp_path / "train.csv", rows(300))
    write_csv(tmp_path / "test.csv", rows(60))
    cfg, task, dm = make("task.name=sentiment", f"task.data_dir={tmp_path}", "task.format=csv",
                         "task.data_files={train: train.csv, test: test.csv}", "task.text_column=review",
                         "task.label_column=stars", "task.tokenizer=basic", "task.lowercase=true",
                         "task.batch_size=16", "optim.lr=0.01", *SMALL)
    module = task.module(dm)
    assert dm.vocabs["label"].itos == ["mid", "neg", "pos"] and len(dm.examples["validation"]) == 30
    t = trainer(120)
    t.fit(module, datamodule=dm)
    res = t.test(module, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] > 0.9 > task.baseline()["test/acc"] + 0.4
    t.save_checkpoint(tmp_path / "c.ckpt")
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=True)
    vocabs = {k: Vocab.from_dict(v) for k, v in ckpt["SentimentData"]["vocabs"].items()}
    assert vocabs == dm.vocabs
    fresh = SentimentData(cfg.task)
    fresh.load_state_dict(ckpt["SentimentData"])
    fresh.setup()                                  # same vocabulary rebuilt: accepted
    fresh.vocabs["word"] = Vocab(["<pad>", "<unk>", "x"])
    with pytest.raises(ValueError, match="checkpoint vocabulary 'word' differs"):
        fresh.load_state_dict(ckpt["SentimentData"])


def test_missing_file_one_line(tmp_path):
    cfg, task, dm = make("task=sst2", f"task.data_dir={tmp_path}")
    with pytest.raises(ConfigError) as e:
        dm.setup()
    msg = str(e.value)
    assert "\n" not in msg and "stsa.binary.train" in msg and "'<label> <text>'" in msg


def test_malformed_file_one_line(tmp_path):
    (tmp_path / "tr.txt").write_text("1 good\n0 bad\n")
    (tmp_path / "te.txt").write_text("1 good\nnolabel\n")
    _, _, dm = make("task.name=sentiment", f"task.data_dir={tmp_path}",
                    "task.data_files={train: tr.txt, validation: tr.txt, test: te.txt}")
    with pytest.raises(ValueError) as e:
        dm.setup()
    assert str(e.value) == f"{tmp_path / 'te.txt'} line 2: malformed; expected one example a line: " \
                           "'<label> <text>' (SST stsa.binary style)"


def test_unseen_test_label_one_line(tmp_path):
    (tmp_path / "tr.txt").write_text("1 good\n0 bad\n")
    (tmp_path / "te.txt").write_text("1 good\n-1 hidden\n")
    _, _, dm = make("task.name=sentiment", f"task.data_dir={tmp_path}", "task.unseen_labels=error",
                    "task.data_files={train: tr.txt, validation: tr.txt, test: te.txt}")
    with pytest.raises(ValueError) as e:
        dm.setup()
    assert str(e.value) == ("test split: label(s) -1 not among the training labels 0, 1 (column 'label'); "
                            "allowed: task.unseen_labels=fallback maps them to '0'")
