"""Per-sentence LM: <BOS> is an input/start and never an output, sentences are independent (no
state carried, padding changes nothing), the start state comes from the <BOS> embedding, the exact
per-token loss, learning beats the unigram baseline and learns the first word from <BOS>, errors."""
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from bench.config import ConfigError, load
from bench.sweep import expand
from tasks.registry import task_class
from tasks.sentence_lm import SentenceLMTask

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.hidden_size=32", "model.embedding_size=16"]


def corpus(tmp_path, n=300):
    """Every sentence starts with 'the', then a noun, then the noun's own verb."""
    g = torch.Generator().manual_seed(0)
    nouns, verbs = ["cat", "dog", "bird", "fish"], ["sleeps", "barks", "sings", "swims"]
    lines = []
    for _ in range(n):
        k = int(torch.randint(0, 4, (1,), generator=g))
        lines.append(" ".join(["the", nouns[k], verbs[k]] + ["very"] * int(torch.randint(0, 3, (1,), generator=g))))
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n\n")
    return ["task.name=sentence_lm", f"task.data_dir={tmp_path}", "task.data_files.train=c.txt",
            "task.data_files.validation=c.txt", "task.data_files.test=c.txt"]


def make(*overrides):
    cfg = load(None, list(overrides))
    task = task_class("sentence_lm")(cfg)
    dm = task.datamodule()
    dm.setup()
    return cfg, task, dm


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", deterministic=True)


def test_registry_and_preset():
    assert task_class("sentence_lm") is SentenceLMTask
    cfg = load(None, ["task=ptb_sentences"])
    assert (cfg.task.name, cfg.task.start) == ("sentence_lm", "state") and SentenceLMTask.primary == "test/ppl"


@pytest.mark.parametrize("start", ["state", "input"])
def test_bos_is_never_an_output_and_sentences_are_independent(tmp_path, start):
    _, task, dm = make(*corpus(tmp_path, 20), f"task.start={start}", "model.num_layers=2", *SMALL)
    m = task.module(dm).eval()
    vocab = dm.vocabs["word"].itos
    assert m.head.out_features == len(vocab) and "<eos>" in vocab and m.bos == len(vocab)
    assert m.embed.num_embeddings == len(vocab) + 2                     # + <BOS> + padding rows
    assert len(dm.examples["train"]) == 20 and all(e["ids"][-1] == vocab.index("<eos>") for e in dm.examples["train"])
    items = dm.examples["train"][:6]
    ids, lengths = dm.collate(items)
    with torch.no_grad():
        together, mask = m.token_nats(ids, lengths)
        for i, e in enumerate(items):                                  # alone = in a padded batch: nothing carried
            alone, _ = m.token_nats(*dm.collate([e]))
            assert torch.allclose(alone[0], together[i, :len(e["ids"])], atol=1e-5)
        first = m(ids, lengths)[:, 0]
    assert torch.allclose(first, first[:1].expand_as(first), atol=1e-6)   # p(w_1) from <BOS> only
    if start == "state":
        h0 = m.h0(3)[0]
        with torch.no_grad():
            m.embed.weight[m.bos] += 1.0
        assert not torch.allclose(m.h0(3)[0], h0)                      # h0 is a function of the <BOS> embedding


def test_exact_per_token_loss(tmp_path):
    _, task, dm = make(*corpus(tmp_path, 30), *SMALL)
    m = task.module(dm).eval()
    res = trainer(1).test(m, datamodule=dm, verbose=False)[0]
    with torch.no_grad():
        nats = [m.token_nats(*dm.collate([e]))[0].sum().item() for e in dm.examples["test"]]
    n = sum(len(e["ids"]) for e in dm.examples["test"])
    assert res["test/loss"] == pytest.approx(sum(nats) / n, rel=1e-5)
    assert res["test/ppl"] == pytest.approx(math.exp(sum(nats) / n), rel=1e-5)


@pytest.mark.parametrize("start", ["state", "input"])
def test_learns_beats_unigram_and_the_first_word_from_bos(tmp_path, start):
    _, task, dm = make(*corpus(tmp_path), f"task.start={start}", *SMALL, "optim.lr=0.01", "task.batch_size=16")
    m = task.module(dm)
    trainer(150).fit(m, datamodule=dm)
    res = trainer(1).test(m, datamodule=dm, verbose=False)[0]
    assert res["test/ppl"] < 0.5 * task.baseline()["test/ppl"], res
    m.eval()
    ids, lengths = dm.collate(dm.examples["test"][:4])
    with torch.no_grad():
        p_first = torch.softmax(m(ids, lengths)[0, 0], -1)
    assert p_first[dm.vocabs["word"].itos.index("the")] > 0.9


def test_errors_are_one_line(tmp_path):
    _, task, dm = make(*corpus(tmp_path, 10), "model.bidirectional=true")
    with pytest.raises(ConfigError) as e:
        task.module(dm)
    assert str(e.value) == "model.bidirectional: a language model cannot read ahead; allowed: false"
    with pytest.raises(ConfigError) as e:
        load(None, ["task=ptb_sentences", "task.start=zero"])
    assert str(e.value) == "task.start: invalid value 'zero'; allowed: state, input"


def test_sentence_vs_stream_sweep_compares_at_equal_model_and_budget():
    """bench/sweeps/ptb_sentence_vs_stream.yaml: the streamed runs are the reference PTB config
    (same hash, so a stored reference run counts), the per-sentence runs differ only in the task."""
    _, cfgs = expand(ROOT / "bench" / "sweeps" / "ptb_sentence_vs_stream.yaml")
    stream = [c for c in cfgs if c.task.name == "lm"]
    sent = [c for c in cfgs if c.task.name == "sentence_lm"]
    assert len(stream) == len(sent) == 2
    assert stream[0].hash == load(ROOT / "bench" / "configs" / "reference" / "ptb.yaml").hash
    for a, b in zip(stream, sent):
        assert (a.seed, a.model, a.optim, a.trainer) == (b.seed, b.model, b.optim, b.trainer)
        assert (a.task.data_files, a.task.tokenizer, a.task.batch_size) == \
            (b.task.data_files, b.task.tokenizer, b.task.batch_size)
        assert b.task.start == "state"
