"""Translation: data (splits, vocab from train), decoding (greedy, beam), BLEU, learning, errors."""
import random
import warnings

import pytest
import torch

from bench.config import load
from bench.inference import translate
from bench.schema import ConfigError
from tasks import text
from tasks.decoding import beam_decode, greedy_decode, sequence_logprob
from tasks.translation import Seq2Seq, TranslationModule, TranslationTask, corpus_bleu, detokenize

warnings.filterwarnings("ignore", message=".*self.trainer.*reference is not registered.*")

SMALL = ["model.hidden_size=32", "model.embedding_size=16", "task.attention_size=16"]


def mt_cfg(*overrides):
    return load(None, ["task=multi30k", *SMALL, *overrides])


# ---------------------------------------------------------------- data


def test_multi30k_slice_splits_vocab_from_train(data_dir):
    c = mt_cfg("task.max_train=400", "task.max_eval=50", "task.min_freq=1")
    task = TranslationTask(c)
    dm = task.datamodule()
    dm.setup()
    assert [len(dm.examples[s]) for s in ("train", "validation", "test")] == [400, 50, 50]
    de = (data_dir / "translation/multi30k/train.de").read_text().splitlines()[:400]
    en = (data_dir / "translation/multi30k/train.en").read_text().splitlines()[:400]
    assert dm.vocabs["src"] == text.Vocab.build([text.tokenize(s, "basic", True) for s in de],
                                                specials=("<pad>", "<unk>", "<bos>", "<eos>"))
    assert dm.vocabs["tgt"] == text.Vocab.build([text.tokenize(s, "basic", True) for s in en],
                                                specials=("<pad>", "<unk>", "<bos>", "<eos>"))
    test_en = (data_dir / "translation/multi30k/test_2016_flickr.en").read_text().splitlines()[:50]
    assert [e["ref"] for e in dm.examples["test"]] == test_en
    unk = dm.vocabs["tgt"].unk_id
    assert any(unk in e["tgt"] for e in dm.examples["test"])      # test words unseen in train -> <unk>
    ex = dm.examples["train"][0]
    assert dm.vocabs["tgt"].decode(ex["tgt"]) == text.tokenize(en[0], "basic", True)
    batch = dm.collate(dm.examples["train"][:3])
    assert batch["tgt_in"][:, 0].eq(dm.vocabs["tgt"]["<bos>"]).all()
    assert batch["tgt_out"][0, len(ex["tgt"])] == dm.vocabs["tgt"]["<eos>"]


def test_source_reversal(data_dir):
    a = TranslationTask(mt_cfg("task.max_train=50", "task.max_eval=5")).datamodule()
    b = TranslationTask(mt_cfg("task.max_train=50", "task.max_eval=5", "task.reverse_source=true")).datamodule()
    a.setup(), b.setup()
    for x, y in zip(a.examples["train"], b.examples["train"]):
        assert y["src"] == x["src"][::-1] and y["tgt"] == x["tgt"]


def test_tokenizer_and_detokenizer():
    toks = text.tokenize("A man, in a (red) shirt's pocket.", "basic", True)
    assert toks == ["a", "man", ",", "in", "a", "(", "red", ")", "shirt's", "pocket", "."]
    assert detokenize(toks) == "a man, in a (red) shirt's pocket."
    assert corpus_bleu(["a man, in a (red) shirt's pocket."], ["A man, in a (red) shirt's pocket."]) == pytest.approx(100)


# ---------------------------------------------------------------- decoding


def _model(attention="additive", cell="lstm", bidirectional=False, V=(30, 25)):
    c = load(None, ["task.name=translation", *SMALL, f"task.attention={attention}", f"model.cell={cell}",
                    f"model.bidirectional={str(bidirectional).lower()}"])
    torch.manual_seed(1)
    m = Seq2Seq(c.model, c.task, V[0], V[1], 0, 0)
    with torch.no_grad():                       # peakier distributions: decoding choices matter
        m.out.weight.mul_(8.0)
    return m.eval()


def _src(B=6, S=7, V=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(2, S + 1, (B,), generator=g)
    src = torch.randint(4, V, (B, S), generator=g)
    src[torch.arange(S)[None, :] >= lens[:, None]] = 0
    return src, lens


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_beam_one_equals_greedy(attention):
    m = _model(attention)
    src, lens = _src()
    g, gs = greedy_decode(m, src, lens, bos=2, eos=3, max_len=12)
    b, bs = beam_decode(m, src, lens, bos=2, eos=3, max_len=12, beam=1)
    assert b == g and bs == pytest.approx(gs)
    # the reported scores are the model's own log-probabilities of the outputs
    assert sequence_logprob(m, src, lens, g, bos=2, pad=0) == pytest.approx(gs, abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("beam", [2, 5])
def test_larger_beam_never_scores_below_greedy(alpha, beam):
    m = _model("additive", bidirectional=True)
    src, lens = _src(B=8, seed=3)
    g, _ = greedy_decode(m, src, lens, bos=2, eos=3, max_len=10)
    b, bs = beam_decode(m, src, lens, bos=2, eos=3, max_len=10, beam=beam, alpha=alpha)
    g_lp = sequence_logprob(m, src, lens, g, bos=2, pad=0)
    b_lp = sequence_logprob(m, src, lens, b, bos=2, pad=0)
    assert b_lp == pytest.approx(bs, abs=1e-4)                  # beam bookkeeping = model score

    def norm(lp, h):
        return lp / (len(h) ** alpha)
    for i in range(len(g)):
        assert norm(b_lp[i], b[i]) >= norm(g_lp[i], g[i]) - 1e-6
        assert b[i][-1] == 3 or len(b[i]) == 10                  # stops at <eos> (or the length cap)
    assert any(x != y for x, y in zip(b, g)) or beam == 2       # the beam does find other outputs


@pytest.mark.parametrize("cell,bidirectional,tf", [("gru", True, 0.5), ("rnn_tanh", False, 0.0),
                                                   ("lstm_cifg", True, 1.0)])
def test_any_cell_trains_a_step(cell, bidirectional, tf):
    c = load(None, ["task.name=translation", *SMALL, f"model.cell={cell}", "task.attention=additive",
                    f"model.bidirectional={str(bidirectional).lower()}", f"task.teacher_forcing={tf}"])
    vocab = {"itos": ["<pad>", "<unk>", "<bos>", "<eos>"] + [f"w{i}" for i in range(20)], "unk": "<unk>", "pad": "<pad>"}
    mod = TranslationModule(c, vocab, vocab)
    src, lens = _src(V=24)
    tgt, tl = text.pad([[4 + i % 5] * (2 + i % 3) for i in range(6)], 0)
    batch = {"src": src, "src_len": lens, "tgt_in": torch.cat([torch.full((6, 1), 2), tgt], 1),
             "tgt_out": torch.cat([tgt, torch.zeros(6, 1, dtype=torch.long)], 1), "tgt_len": tl}
    loss = mod.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and mod.model.encoder.output_size == 32 * (2 if bidirectional else 1)
    assert all(p.grad is not None for n, p in mod.named_parameters() if "decoder" in n and "weight" in n)


# ---------------------------------------------------------------- learning, bring your own data


NUM = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _write_toy(d, n_train=1500, seed=0):
    """A toy language pair: German number words -> English number words, reversed order."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("val", 50), ("test", 60)):
        src, tgt = [], []
        for _ in range(n):
            ks = [rng.randrange(10) for _ in range(rng.randint(2, 6))]
            src.append(" ".join(NUM[k] for k in ks).capitalize() + ".")
            tgt.append(" ".join(EN[k] for k in reversed(ks)).capitalize() + ".")
        (d / f"{split}.de").write_text("\n".join(src) + "\n")
        (d / f"{split}.en").write_text("\n".join(tgt) + "\n")


def test_bring_your_own_parallel_files_learns_beats_copy_baseline(tmp_path, store):
    from bench.train import run

    _write_toy(tmp_path)
    c = load(None, ["task.name=translation", f"task.data_dir={tmp_path}",
                    "task.data_files={train: [train.de, train.en], validation: [val.de, val.en], "
                    "test: [test.de, test.en]}", "task.min_freq=1", "task.reverse_source=true",
                    "task.batch_size=32", "task.beam_size=3", "task.val_bleu=false",
                    "model.hidden_size=64", "model.embedding_size=32",
                    "optim.lr=0.01", "trainer.max_steps=150", "trainer.val_every=150"])
    result = run(c, store, wandb_mode="disabled")
    assert result["status"] == "done", result.get("error")
    assert result["primary"] == "test/bleu" and result["mode"] == "max"
    m, b = result["metrics"], result["baseline"]
    assert b["test/bleu"] < 10
    assert m["test/bleu"] > 60, m
    assert m["test/ppl"] < b["test/ppl"]
    ckpt = store / "runs" / result["hash"] / "checkpoints" / "last.ckpt"
    assert translate(ckpt, ["Eins zwei drei."], beam=3) == ["three two one."]


@pytest.mark.slow
def test_multi30k_small_model_beats_unigram(data_dir):
    import lightning as L

    c = mt_cfg("task.max_train=3000", "task.max_eval=100", "task.val_bleu=false", "task.beam_size=1",
               "task.batch_size=64", "model.hidden_size=64", "model.embedding_size=64", "optim.lr=0.005")
    L.seed_everything(0, verbose=False)
    task = TranslationTask(c)
    dm = task.datamodule()
    module = task.module(dm)
    trainer = L.Trainer(max_steps=60, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    m = trainer.test(module, datamodule=dm, verbose=False)[0]
    b = task.baseline()
    assert m["test/ppl"] < b["test/ppl"], (m, b)
    assert 0 <= m["test/bleu"] <= 100


# ---------------------------------------------------------------- errors


def test_missing_file_one_line_error(tmp_path):
    _write_toy(tmp_path, n_train=20)
    c = load(None, ["task.name=translation", f"task.data_dir={tmp_path}",
                    "task.data_files={train: [train.de, train.en], validation: [val.de, val.en], "
                    "test: [test.de, nothere.en]}"])
    with pytest.raises(ConfigError) as e:
        TranslationTask(c).datamodule().setup()
    msg = str(e.value)
    assert "\n" not in msg and "nothere.en" in msg and "aligned by line" in msg, msg


def test_misaligned_files_one_line_error(tmp_path):
    _write_toy(tmp_path, n_train=20)
    (tmp_path / "train.en").write_text("\n".join((tmp_path / "train.en").read_text().splitlines()[:-3]) + "\n")
    c = load(None, ["task.name=translation", f"task.data_dir={tmp_path}",
                    "task.data_files={train: [train.de, train.en], validation: [val.de, val.en], "
                    "test: [test.de, test.en]}"])
    with pytest.raises(ValueError) as e:
        TranslationTask(c).datamodule().setup()
    msg = str(e.value)
    assert "\n" not in msg and "train.en line 18" in msg and "aligned by line" in msg, msg
