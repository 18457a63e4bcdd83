"""Tagging family: datamodules on slices of UD EWT and CoNLL-2003, masks and padding invariance,
span F1, learning, bring-your-own-data by config only, errors, vocabularies in checkpoints."""
import json
import random

import lightning as L
import pytest
import torch

from bench.config import ConfigError, load
from tasks.registry import task_class
from tasks.tagging import IGNORE, SpanF1, TaggingTask, span_f1
from tasks.text import Vocab

SMALL = ["model.hidden_size=16", "model.embedding_size=16", "model.bidirectional=true"]
UPOS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X"}


def make(*overrides):
    cfg = load(None, list(overrides))
    task = task_class(cfg.task.name)(cfg)
    return cfg, task, task.datamodule()


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     accelerator="cpu", deterministic=True)


def test_registry_and_presets():
    assert task_class("tagging") is TaggingTask
    ud = TaggingTask(load(None, ["task=ud_pos"]))
    ner = TaggingTask(load(None, ["task=conll_ner"]))
    assert (ud.cfg.name, ud.primary, ner.primary, TaggingTask.mode) == ("tagging", "test/acc", "test/f1", "max")
    with pytest.raises(ConfigError, match="task.max_len: tagging keeps whole sentences"):
        load(None, ["task=ud_pos", "task.max_len=5"])


def test_ud_datamodule(data_dir):
    cfg, task, dm = make("task=ud_pos", "task.max_train=300", "task.max_eval=50", *SMALL)
    dm.setup()
    assert [len(dm.examples[s]) for s in ("train", "validation", "test")] == [300, 50, 50]
    assert set(dm.vocabs["tag"].itos) <= UPOS and len(dm.vocabs["tag"]) >= 14
    train_words = {w.lower() for e in dm.examples["train"] for w in e["words"]}
    assert set(dm.vocabs["word"].itos[2:]) == train_words                # train split only, lowercased
    assert set(dm.vocabs["char"].itos[2:]) == {ch for e in dm.examples["train"] for w in e["words"] for ch in w}
    b = next(iter(dm.val_dataloader()))
    mask = torch.arange(b["ids"].shape[1])[None] < b["lengths"][:, None]
    assert ((b["tags"] == IGNORE) == ~mask).all() and (b["ids"][~mask] == 0).all()
    assert b["chars"].shape[:2] == b["ids"].shape and (b["chars"][~mask] == 0).all()
    base = task.baseline()
    assert set(base) == {"test/acc"} and 0.5 < base["test/acc"] < 1


def test_conll_datamodule_and_baseline(data_dir):
    cfg, task, dm = make("task=conll_ner", "task.max_train=500", "task.max_eval=100", *SMALL)
    dm.setup()
    assert all(e["words"][0] != "-DOCSTART-" for s in dm.examples.values() for e in s)
    assert dm.vocabs["tag"].itos == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]
    base = task.baseline()
    assert set(base) == {"test/acc", "test/f1"} and 0 < base["test/f1"] < base["test/acc"] < 1


def test_span_f1_is_entity_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert span_f1(gold, gold) == 1.0
    assert span_f1(gold, [["B-PER", "O", "O", "B-LOC"]]) == pytest.approx(0.5)   # half a name = wrong
    assert span_f1(gold, [["O", "O", "O", "O"]]) == 0.0


def test_span_f1_metric_equals_seqeval_and_sums_across_shards():
    names = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 12, (40,), generator=g)
    gold = torch.randint(0, 5, (40, 12), generator=g)
    pred = torch.where(torch.rand(40, 12, generator=g) < 0.7, gold, torch.randint(0, 5, (40, 12), generator=g))
    rows = lambda t: [[names[i] for i in r[:n]] for r, n in zip(t.tolist(), lengths.tolist())]
    whole = SpanF1(names)
    whole.update(pred, gold, lengths)
    assert whole.compute().item() == pytest.approx(span_f1(rows(gold), rows(pred)), abs=1e-6)
    # two "ranks" each see half; summing their counts (what DDP reduction does) gives the same F1
    a, b = SpanF1(names), SpanF1(names)
    a.update(pred[:17], gold[:17], lengths[:17])
    b.update(pred[17:], gold[17:], lengths[17:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(whole.compute().item(), abs=1e-7)


@pytest.mark.parametrize("impl", ["auto", "custom"])
def test_padding_never_changes_a_result(tmp_path, impl):
    (tmp_path / "d.txt").write_text("A x B-ORG\nb x O\nC x O\n\nd x O\n\ne x O\nF x B-PER\ng x I-PER\nh x O\ni x O\n\n")
    cfg, task, dm = make("task=conll_ner", f"task.data_dir={tmp_path}", "task.columns=[tokens, pos, ner_tags]",
                         "task.data_files={train: d.txt, validation: d.txt, test: d.txt}",
                         f"model.impl={impl}", "model.num_layers=2", *SMALL)
    module = task.module(dm).eval()
    items = dm.examples["train"]
    with torch.no_grad():
        together = module(dm.collate(items))
        for i, e in enumerate(items):
            alone = module(dm.collate([e]))[0]
            torch.testing.assert_close(together[i, :len(e["ids"])], alone, rtol=1e-5, atol=1e-6)


def test_learns_ud_beats_majority_tag(data_dir):
    cfg, task, dm = make("task=ud_pos", "task.max_train=800", "task.max_eval=200", "task.char_embedding=0",
                         "model.hidden_size=32", "model.embedding_size=32", "model.bidirectional=true",
                         "optim.lr=0.01")
    module = task.module(dm)
    trainer(50).fit(module, datamodule=dm)
    acc = trainer(1).test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    tags = [t for e in dm.examples["test"] for t in e["tags"]]
    majority = max(tags.count(t) for t in set(tags)) / len(tags)
    assert acc > majority + 0.3, (acc, majority)


@pytest.mark.slow
def test_learns_ud_beats_word_baseline(data_dir):
    """Longer: beats most-frequent-tag-per-word on a 4,000-sentence slice."""
    cfg, task, dm = make("task=ud_pos", "task.max_train=4000", "task.max_eval=500", "task.unk_replace=0.25",
                         "model.hidden_size=64", "model.embedding_size=64", "model.bidirectional=true",
                         "optim.lr=0.005")
    module = task.module(dm)
    trainer(500).fit(module, datamodule=dm)
    acc = trainer(1).test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    assert acc > task.baseline()["test/acc"], acc


def _context_rows(n, seed):
    """Tag depends on the previous word only: a per-word baseline cannot learn it, a BiLSTM can."""
    rng = random.Random(seed)
    words = ["cat", "dog", "sun", "run", "blue", "tree", "the"]
    out = []
    for _ in range(n):
        toks = [rng.choice(words) for _ in range(rng.randint(3, 10))]
        tags = ["AFTER" if i and toks[i - 1] == "the" else "O" for i in range(len(toks))]
        out.append({"words": toks, "labels": tags, "id": rng.random()})
    return out


def test_bring_your_own_data(tmp_path):
    """JSON lines with user column names, by config only; learns a context-dependent tag; the
    vocabularies (word, tag, char) ride in a checkpoint loadable with weights_only=True."""
    for split, n in (("train", 400), ("dev", 50), ("test", 100)):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for row in _context_rows(n, hash(split) % 1000):
                f.write(json.dumps(row) + "\n")
    cfg, task, dm = make("task.name=tagging", f"task.data_dir={tmp_path}", "task.format=json",
                         "task.data_files={train: train.jsonl, validation: dev.jsonl, test: test.jsonl}",
                         "task.text_column=words", "task.label_column=labels", "task.char_embedding=8",
                         "task.char_filters=8", "task.batch_size=16", "optim.lr=0.02", *SMALL)
    module = task.module(dm)
    assert dm.vocabs["tag"].itos == ["AFTER", "O"]
    t = trainer(100)
    t.fit(module, datamodule=dm)
    acc = t.test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    assert acc > 0.97 and acc > task.baseline()["test/acc"] + 0.05, acc
    t.save_checkpoint(tmp_path / "c.ckpt")
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=True)
    vocabs = {k: Vocab.from_dict(v) for k, v in ckpt["TaggingData"]["vocabs"].items()}
    assert set(vocabs) == {"word", "tag", "char"} and vocabs == dm.vocabs


def test_byod_conll_columns_span_f1(tmp_path):
    (tmp_path / "a.conll").write_text("-DOCSTART- O\n\nAnn B-PER\nran O\n\nin O\nParis B-LOC\n\n")
    cfg, task, dm = make("task=conll_ner", f"task.data_dir={tmp_path}", "task.columns=[tokens, ner_tags]",
                         "task.data_files={train: a.conll, validation: a.conll, test: a.conll}", *SMALL)
    dm.setup()
    assert [e["words"] for e in dm.examples["test"]] == [["Ann", "ran"], ["in", "Paris"]]
    assert task.baseline() == {"test/acc": 1.0, "test/f1": 1.0}


def test_missing_file_one_line(tmp_path):
    _, _, dm = make("task=ud_pos", f"task.data_dir={tmp_path}")
    with pytest.raises(ConfigError) as e:
        dm.setup()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("task.data_files.train: file ") and "en_ewt-ud-train.conllu" in msg
    assert "CoNLL-U" in msg


def test_malformed_conll_one_line(tmp_path):
    (tmp_path / "a.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    _, _, dm = make("task=conll_ner", f"task.data_dir={tmp_path}",
                    "task.data_files={train: a.txt, validation: a.txt, test: a.txt}")
    with pytest.raises(ValueError) as e:
        dm.setup()
    assert str(e.value) == (f"{tmp_path / 'a.txt'} line 2: malformed; expected 4 whitespace-separated columns "
                            "(tokens, pos_tags, chunk_tags, ner_tags), got 3")


def test_tokens_tags_mismatch_one_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"tokens": ["a", "b"], "tags": ["X"]}\n')
    _, _, dm = make("task.name=tagging", f"task.data_dir={tmp_path}", "task.format=json",
                    "task.data_files={train: d.jsonl, validation: d.jsonl, test: d.jsonl}",
                    "task.label_column=tags")
    with pytest.raises(ValueError, match=r"^train split, example 0: 2 tokens but 1 tags"):
        dm.setup()
