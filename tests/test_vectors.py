"""Pretrained word vectors: `task.embeddings` (tasks.text.init_embedding) and the gensim
tool that makes them (`rnnbench vectors`, bench.word_vectors)."""
import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.config import ConfigError, load
from bench.train import run
from tasks.registry import task_class
from tasks.text import Vocab, init_embedding, load_vectors

ROOT = Path(__file__).resolve().parents[1]

HELP = ("word vectors as text, one 'word v1 ... vD' a line (GloVe; the word2vec text format's "
        "'count dim' first line is skipped), .gz allowed")


def vocab():
    return Vocab(["<pad>", "<unk>", "good", "bad", "meh"])


def test_rows_from_file_others_rescaled_pad_zero(tmp_path):
    (tmp_path / "v.txt").write_text("3 4\ngood 1 2 3 4\nzebra 9 9 9 9\nbad -1 -2 -3 -4\ngood 7 7 7 7\n")
    emb = nn.Embedding(5, 4, padding_idx=0)
    before = emb.weight.detach().clone()
    info = init_embedding(emb, vocab(), tmp_path / "v.txt")
    assert info["words_found"] == 2 and info["vocab_size"] == 5
    assert info["sha256"] == hashlib.sha256((tmp_path / "v.txt").read_bytes()).hexdigest()
    w = emb.weight.detach()
    assert torch.equal(w[2], torch.tensor([1., 2, 3, 4])) and torch.equal(w[3], -torch.tensor([1., 2, 3, 4]))
    assert torch.equal(w[0], torch.zeros(4))
    vec_std = torch.tensor([[1., 2, 3, 4], [-1, -2, -3, -4]]).std()
    scale = vec_std / before.std()                  # words not in the file keep their init, rescaled
    torch.testing.assert_close(w[[1, 4]], before[[1, 4]] * scale)
    assert emb.weight.requires_grad


def test_glove_gz_and_freeze(tmp_path):
    with gzip.open(tmp_path / "g.txt.gz", "wt") as f:
        f.write("meh 0.5 0.25\n")
    emb = nn.Embedding(5, 2, padding_idx=0)
    assert init_embedding(emb, vocab(), tmp_path / "g.txt.gz", freeze=True)["words_found"] == 1
    assert torch.equal(emb.weight[4].detach(), torch.tensor([0.5, 0.25])) and not emb.weight.requires_grad


def test_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_vectors(tmp_path / "none.txt", vocab(), 4)
    assert str(e.value) == f"task.embeddings: file {tmp_path / 'none.txt'} not found; expected {HELP}"
    (tmp_path / "d.txt").write_text("good 1 2 3\n")
    with pytest.raises(ValueError) as e:
        load_vectors(tmp_path / "d.txt", vocab(), 4)
    assert str(e.value) == f"{tmp_path / 'd.txt'} line 1: 3 numbers, but model.embedding_size is 4; expected {HELP}"
    (tmp_path / "m.txt").write_text("bad 1 2\ngood 1 x\n")
    with pytest.raises(ValueError) as e:
        load_vectors(tmp_path / "m.txt", vocab(), 2)
    assert str(e.value) == f"{tmp_path / 'm.txt'} line 2: malformed; expected {HELP}"
    (tmp_path / "o.txt").write_text("zebra 1 2\n")
    with pytest.raises(ConfigError, match=r"^task.embeddings: no word of the training vocabulary is in "):
        init_embedding(nn.Embedding(5, 2), vocab(), tmp_path / "o.txt")


def write_sentiment(tmp_path):
    lines = [f"{i % 2} {'good' if i % 2 else 'bad'} movie {'it was' if i % 3 else 'plot'}" for i in range(60)]
    for name in ("tr.txt", "te.txt"):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    return ["task.name=sentiment", f"task.data_dir={tmp_path}", "task.data_files={train: tr.txt, test: te.txt}"]


def test_train_starts_from_the_vectors_after_init_range(tmp_path):
    """Through `rnnbench train`: the vectors are applied after model.init_range, and frozen ones
    are still the file's after training (read from the weights_only checkpoint)."""
    (tmp_path / "v.txt").write_text("good 1 1 1 1\nbad -1 -1 -1 -1\nmovie 0 0.5 0 0.5\n")
    cfg = load(None, write_sentiment(tmp_path) + [
        f"task.embeddings={tmp_path / 'v.txt'}", "task.freeze_embeddings=true", "task.batch_size=8",
        "model.embedding_size=4", "model.hidden_size=8", "model.init_range=0.1",
        "trainer.max_steps=10", "trainer.val_every=5"])
    r = run(cfg, tmp_path / "store", wandb_mode="disabled")
    assert r["status"] == "done", r["error"]
    assert r["pretrained"]["words_found"] == 3 and r["pretrained"]["embeddings"] == str(tmp_path / "v.txt")
    ckpt = torch.load(next((tmp_path / "store").rglob("last.ckpt")), weights_only=True)
    words = Vocab.from_dict(ckpt["SentimentData"]["vocabs"]["word"])
    w = ckpt["state_dict"]["embed.weight"]
    assert torch.equal(w[words["good"]], torch.ones(4)) and torch.equal(w[words["bad"]], -torch.ones(4))
    assert torch.equal(w[words["movie"]], torch.tensor([0, 0.5, 0, 0.5]))


def test_tagging_takes_vectors_too(tmp_path, data_dir):
    (tmp_path / "v.txt").write_text("the 1 2\n")
    cfg = load(None, ["task=ud_pos", "task.max_train=2000", "task.max_eval=10", "model.embedding_size=2",
                      "model.hidden_size=4", f"task.embeddings={tmp_path / 'v.txt'}"])
    task = task_class("tagging")(cfg)
    module = task.module(task.datamodule())
    task.pretrained(module)
    assert torch.equal(module.embed.weight[task.datamodule().vocabs["word"]["the"]].detach(), torch.tensor([1., 2]))


def word_vectors(tmp_path, out, hashseed):
    env = {**os.environ, "PYTHONHASHSEED": str(hashseed)}
    return subprocess.run([sys.executable, "-m", "bench.cli", "vectors", *write_sentiment(tmp_path),
                           "--out", str(out), "--dim", "6", "--min-count", "1", "--epochs", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_word_vectors_tool_is_reproducible_and_loadable(tmp_path):
    pytest.importorskip("gensim")
    a, b = word_vectors(tmp_path, tmp_path / "a.txt", 1), word_vectors(tmp_path, tmp_path / "b.txt", 2)
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-500:]
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    rows = load_vectors(tmp_path / "a.txt", Vocab(["<pad>", "<unk>", "good", "bad", "movie", "plot"]), 6)
    assert sorted(rows) == ["bad", "good", "movie", "plot"]


def test_word_vectors_tool_bad_split_one_line(tmp_path):
    pytest.importorskip("gensim")
    r = subprocess.run([sys.executable, "-m", "bench.cli", "vectors", *write_sentiment(tmp_path),
                        "--out", str(tmp_path / "x"), "--splits", "train,dev"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == \
        "rnnbench vectors: error: --splits: invalid value 'dev'; allowed: train, validation, test"
    assert not (tmp_path / "x").exists()


def test_word_vectors_tool_min_count_one_line(tmp_path, capsys):
    pytest.importorskip("gensim")
    from bench.cli import main

    assert main(["vectors", *write_sentiment(tmp_path), "--out", str(tmp_path / "x"), "--min-count", "1000"]) == 2
    # 54 texts: the 60 written less the validation carve
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "rnnbench vectors: error: --min-count: no word occurs 1000 times in the 54 texts"
    assert not (tmp_path / "x").exists()


def test_train_with_a_missing_vectors_file_fails_in_one_line(tmp_path, capsys):
    from bench.cli import main

    missing = tmp_path / "none.txt"
    code = main(["train", *write_sentiment(tmp_path), f"task.embeddings={missing}", "model.embedding_size=4",
                 "model.hidden_size=4", "trainer.max_steps=2", "--store", str(tmp_path / "store"),
                 "--wandb", "disabled"])
    assert code == 1
    assert f"  error: ConfigError: task.embeddings: file {missing} not found; expected {HELP}" in \
        capsys.readouterr().out.splitlines()
