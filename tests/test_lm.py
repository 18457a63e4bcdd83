"""Language modelling: data (splits, vocab from train), truncated BPTT, learning, sampling, errors."""
import math
import warnings

import pytest
import torch

from bench.config import ConfigError, load
from bench.inference import sample
from tasks import text
from tasks.lm import (LMData, LMModule, LMTask, TBPTTWindows, batchify, detokenize, load_texts,
                      tokenize, unigram_scores)

warnings.filterwarnings("ignore", message=".*self.trainer.*reference is not registered.*")


def cfg_of(*overrides, preset="ptb"):
    return load(None, [f"task={preset}", *overrides])


# ---------------------------------------------------------------- data


def test_ptb_slice_splits_and_vocab_from_train(data_dir):
    c = cfg_of("task.max_train=300", "task.max_eval=60")
    dm = LMData(c.task)
    dm.setup()
    lines = (data_dir / "lm/ptb/ptb.train.txt").read_text().splitlines()[:300]
    train_tokens = [t for ln in lines for t in ln.split() + ["<eos>"]]
    assert dm.vocab == text.Vocab.build([train_tokens], specials=("<unk>",), pad=None)
    assert dm.vocab.decode(dm.ids["train"].tolist()) == train_tokens
    valid = (data_dir / "lm/ptb/ptb.valid.txt").read_text().splitlines()[:60]
    valid_tokens = [t for ln in valid for t in ln.split() + ["<eos>"]]
    assert dm.ids["validation"].numel() == len(valid_tokens)
    unseen = [t for t in valid_tokens if t not in dm.vocab]
    assert unseen, "a 300-line slice leaves validation words out of the vocabulary"
    assert dm.vocab.unk_id in dm.ids["validation"].tolist()
    # test split is the official test file
    test = (data_dir / "lm/ptb/ptb.test.txt").read_text().splitlines()[0].split()
    assert dm.vocab.decode(dm.ids["test"][:3].tolist()) == [t if t in dm.vocab else "<unk>" for t in test[:3]]


def test_tinyshakespeare_cut_by_position(data_dir):
    c = cfg_of("task.max_train=2000", preset="tinyshakespeare")
    texts = load_texts(c.task)
    head = "".join(ln + "\n" for ln in (data_dir / "lm/tinyshakespeare/input.txt").read_text().split("\n")[:2000])
    whole = texts["train"] + texts["validation"] + texts["test"]
    assert whole == head
    n = len(head)
    assert len(texts["train"]) == int(0.9 * n) and len(texts["validation"]) == int(0.95 * n) - int(0.9 * n)
    dm = LMData(c.task)
    dm.setup()
    assert set(dm.vocab.itos) == {"<unk>"} | set(texts["train"])      # characters of train only


def test_tokenize_detokenize_word_level():
    toks = tokenize("the cat sat\n\na dog\n", "word")
    assert toks == ["the", "cat", "sat", "<eos>", "a", "dog", "<eos>"]
    assert detokenize(toks, "word") == "the cat sat\na dog\n"


# ---------------------------------------------------------------- truncated BPTT


def test_tbptt_windows_cover_the_stream_once():
    s = batchify(torch.arange(2 * 23), 2)                       # (2, 23)
    for k1, k2 in [(5, 5), (3, 7), (4, 4), (1, 6)]:
        ds = TBPTTWindows(s, k1, k2)
        seen = []
        for i in range(len(ds)):
            w = ds[i]
            assert w["x"].size(1) <= k2 and w["y"].size(1) <= k1
            # targets are the next tokens of the window's last inputs
            assert torch.equal(w["y"], w["x"][:, -w["y"].size(1):] + 1)
            seen += w["y"][0].tolist()
        assert seen == list(range(1, 23))


@pytest.mark.parametrize("k1,k2", [(4, 4), (3, 7)])
def test_tbptt_gradients_stop_after_k2_steps(k1, k2):
    """Every input position is its own token id, so the embedding-table gradient row p is the
    gradient w.r.t. the input at position p. Driving the module's own training_step over
    consecutive windows (state carried), the loss of an update ending at position e must have
    exactly zero gradient for inputs older than e - k2 and non-zero for the last k2 inputs."""
    N = 6 * k1 + k2 + 1
    c = load(None, ["task=ptb", f"task.k1={k1}", f"task.k2={k2}", "task.bptt=4", "model.hidden_size=8",
                    "model.embedding_size=5", "model.num_layers=2"])
    module = LMModule(c, [f"t{i}" for i in range(N)])
    windows = TBPTTWindows(batchify(torch.arange(N), 1), k1, k2)
    module.on_train_epoch_start()
    for i in range(len(windows)):
        batch = windows[i]
        module.zero_grad()
        loss = module.training_step(batch, i)
        loss.backward()
        end = i * k1 + batch["y"].size(1)                         # one past the last input position
        g = module.embed.weight.grad.abs().sum(1)
        older = g[: max(0, end - k2)]
        recent = g[max(0, end - k2): end]
        assert torch.all(older == 0), (i, older)
        assert torch.all(recent > 0), (i, recent)
        assert torch.all(g[end:] == 0)                            # no future inputs either
    # the carried state is detached and (k1 < k2) taken inside the window, not at its end
    assert all(not s.requires_grad for s in module._carry)


def test_state_carried_across_batches_and_reset_at_epoch_start():
    c = load(None, ["task=ptb", "task.bptt=5", "model.hidden_size=8", "model.embedding_size=4"])
    module = LMModule(c, [str(i) for i in range(10)])
    windows = TBPTTWindows(batchify(torch.arange(40) % 10, 2), 5, 5)
    module.on_train_epoch_start()
    first = module.training_step(windows[0], 0).item()
    module.training_step(windows[1], 1)
    assert module._carry is not None
    # same window with a carried (non-zero) state differs; after an epoch reset it is the same again
    carried = module.window_loss(module.embed(windows[0]["x"]), windows[0]["y"], module._carry, 5)[0].mean().item()
    assert carried != pytest.approx(first)
    module.on_train_epoch_start()
    assert module.training_step(windows[0], 0).item() == pytest.approx(first)


def test_k2_smaller_than_k1_rejected():
    with pytest.raises(ConfigError, match=r"task.k2: invalid value 3; allowed: a number >= k1 \(5\)"):
        load(None, ["task=ptb", "task.k1=5", "task.k2=3"])


def test_bidirectional_lm_rejected():
    c = load(None, ["task=ptb", "model.bidirectional=true", "model.hidden_size=4"])
    with pytest.raises(ConfigError, match="model.bidirectional"):
        LMModule(c, ["a", "b"])


# ---------------------------------------------------------------- learning and sampling


def test_char_lm_beats_unigram_and_samples(data_dir, store):
    from bench.train import run

    c = load(None, ["task=tinyshakespeare", "task.max_train=3000", "task.bptt=50", "task.batch_size=16",
                    "task.eval_batch_size=4", "model.hidden_size=64", "model.embedding_size=32",
                    "optim.lr=0.01", "trainer.max_steps=100", "trainer.val_every=100"])
    result = run(c, store, wandb_mode="disabled")
    assert result["status"] == "done", result.get("error")
    m, b = result["metrics"], result["baseline"]
    assert result["primary"] == "test/bpc"
    assert m["test/bpc"] < b["test/bpc"] - 0.8, (m, b)              # unigram ~4.4 bits/char
    assert m["test/ppl"] == pytest.approx(math.exp(m["test/loss"]), rel=1e-4)
    assert m["test/bpc"] == pytest.approx(m["test/loss"] / math.log(2), rel=1e-4)
    assert result["beats_baseline"] is True

    ckpt = store / "runs" / result["hash"] / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(raw["vocab"]["itos"], list)
    out = sample(ckpt, prompt="ROMEO:", length=80, temperature=0.8, seed=3)
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 80
    assert out == sample(ckpt, prompt="ROMEO:", length=80, temperature=0.8, seed=3)
    assert sample(ckpt, prompt="", length=20, temperature=0, seed=1) == sample(ckpt, "", 20, 0, 2)


@pytest.mark.slow
def test_word_lm_beats_unigram(data_dir):
    import lightning as L

    c = load(None, ["task=ptb", "task.max_train=1500", "task.max_eval=150", "task.bptt=20",
                    "model.hidden_size=64", "model.embedding_size=64", "task.tie_weights=true",
                    "optim.lr=0.005"])
    L.seed_everything(0, verbose=False)
    task = LMTask(c)
    dm = task.datamodule()
    module = task.module(dm)
    trainer = L.Trainer(max_steps=200, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        gradient_clip_val=1.0)
    trainer.fit(module, datamodule=dm)
    m = trainer.test(module, datamodule=dm, verbose=False)[0]
    b = task.baseline()
    assert m["test/ppl"] < 0.9 * b["test/ppl"], (m, b)


def test_unigram_baseline_is_train_frequencies():
    s = unigram_scores(torch.tensor([0, 1, 1, 1]), torch.tensor([1, 1]), ["a", "b"], "char")
    # add-one counts: a=2, b=4 -> p(b) = 4/6
    assert s["loss"] == pytest.approx(-math.log(4 / 6))
    assert s["bpc"] == pytest.approx(-math.log2(4 / 6))


# ---------------------------------------------------------------- bring your own data, errors


def test_bring_your_own_word_files(tmp_path):
    (tmp_path / "tr.txt").write_text("a b c\nb c d\n" * 40)
    (tmp_path / "va.txt").write_text("a b c\nc d e\n" * 5)
    (tmp_path / "te.txt").write_text("b c d\n" * 10)
    c = load(None, ["task.name=lm", "task.tokenizer=whitespace", f"task.data_dir={tmp_path}",
                    "task.data_files={train: tr.txt, validation: va.txt, test: te.txt}",
                    "task.batch_size=4", "task.eval_batch_size=2", "task.bptt=5",
                    "model.hidden_size=8", "model.embedding_size=4"])
    task = LMTask(c)
    dm = task.datamodule()
    dm.setup()
    assert set(dm.vocab.itos) == {"<unk>", "a", "b", "c", "d", "<eos>"}    # "e" only in validation
    assert dm.ids["test"].numel() == 40
    module = task.module(dm)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 5)
    assert torch.isfinite(module.training_step(batch, 0))


def test_bring_your_own_single_char_file_is_cut(tmp_path):
    (tmp_path / "book.txt").write_text("".join(f"line {i} of my book\n" for i in range(200)))
    c = load(None, ["task.name=lm", f"task.data_dir={tmp_path}", "task.data_files={train: book.txt}",
                    "task.cut=[0.8, 0.1, 0.1]", "task.batch_size=4", "task.eval_batch_size=2"])
    texts = load_texts(c.task)
    whole = (tmp_path / "book.txt").read_text()
    assert texts["train"] == whole[: int(0.8 * len(whole))]
    assert texts["train"] + texts["validation"] + texts["test"] == whole


def test_missing_file_one_line_error(tmp_path):
    c = load(None, ["task=ptb", f"task.data_dir={tmp_path}"])
    with pytest.raises(ConfigError) as e:
        LMData(c.task).setup()
    msg = str(e.value)
    assert "\n" not in msg and "ptb.train.txt" in msg and "expected plain text" in msg


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x81bad bytes\x00\xc3\x28", b""])
def test_malformed_file_one_line_error(tmp_path, content):
    (tmp_path / "tr.txt").write_bytes(content)
    (tmp_path / "ok.txt").write_text("a b\n" * 50)
    c = load(None, ["task.name=lm", "task.tokenizer=whitespace", f"task.data_dir={tmp_path}",
                    "task.data_files={train: tr.txt, validation: ok.txt, test: ok.txt}"])
    with pytest.raises((ValueError, ConfigError)) as e:
        LMData(c.task).setup()
    msg = str(e.value)
    want = "tr.txt: not UTF-8 at line 1 (byte 0xff); set task.encoding" if content else "tr.txt: empty file; expected"
    assert "\n" not in msg and want in msg, msg
