"""The shared text data layer (tasks/text.py): sources, parsers, errors, vocabulary, bucketing,
padding."""
import gzip
import json

import datasets
import pytest
import torch

from bench.config import ConfigError, build
from tasks import text
from tasks.text import (BucketBatchSampler, TextDataConfig, Vocab, char_vocab, lengths_to_mask,
                        load_splits, pad, tokenize)


def cfg_of(**kw) -> TextDataConfig:
    return build(TextDataConfig, kw, "task.")


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- sources


def test_local_label_text_and_validation_carve(tmp_path):
    (tmp_path / "tr.txt").write_text("".join(f"{i % 2} word{i} common\n" for i in range(50)))
    (tmp_path / "te.txt").write_text("1 common new\n0 other\n")
    c = cfg_of(data_dir=str(tmp_path), format="label_text",
               data_files={"train": "tr.txt", "test": "te.txt"}, val_fraction=0.2, data_seed=7)
    d = load_splits(c)
    assert (len(d["train"]), len(d["validation"]), len(d["test"])) == (40, 10, 2)
    assert d["test"][0] == {"text": "common new", "label": "1"}
    again = load_splits(c)
    assert list(again["validation"]["text"]) == list(d["validation"]["text"])          # deterministic
    other = load_splits(cfg_of(**{**c.__dict__, "data_seed": 8}))
    assert list(other["validation"]["text"]) != list(d["validation"]["text"])          # follows data_seed


def test_changed_file_is_reread(tmp_path):
    """The from_generator cache is keyed on file size+mtime, so an edited file is not stale."""
    f = tmp_path / "tr.txt"
    f.write_text("0 a\n1 b\n")
    c = cfg_of(data_dir=str(tmp_path), format="label_text", data_files={"train": "tr.txt", "test": "tr.txt"})
    assert list(load_splits(c)["test"]["text"]) == ["a", "b"]
    f.write_text("0 a\n1 b\n1 c c\n")
    assert list(load_splits(c)["test"]["text"]) == ["a", "b", "c c"]


def test_env_var_selects_local(tmp_path, monkeypatch):
    (tmp_path / "d.jsonl").write_text('{"t": "x y", "y": 1}\n{"t": "z", "y": 0}\n')
    monkeypatch.setenv("RNNBENCH_DATA", str(tmp_path))
    c = cfg_of(format="json", data_files={"train": "d.jsonl", "validation": "d.jsonl", "test": "d.jsonl"},
               text_column="t", label_column="y")
    assert list(load_splits(c)["train"]["t"]) == ["x y", "z"]


def test_hub_path_same_columns(monkeypatch):
    """No hub here: stub load_dataset and check the split mapping, revision, and that ClassLabel
    ints become their names (as the local parsers give strings)."""
    calls = []
    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})

    def fake(name, config=None, split=None, revision=None):
        calls.append((name, config, split, revision))
        return datasets.Dataset.from_dict({"tokens": [["Ann", "ran"], ["x"]], "ner_tags": [[1, 0], [0]],
                                           "label": [1, 0]}, features=feats)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.delenv("RNNBENCH_DATA", raising=False)
    c = cfg_of(dataset="someone/ner", hub_config="en", hub_revision="refs/convert/parquet",
               splits={"train": "train", "validation": None, "test": "test"}, val_fraction=0.5,
               text_column="tokens", label_column="ner_tags")
    d = load_splits(c)
    assert calls == [("someone/ner", "en", "train", "refs/convert/parquet"),
                     ("someone/ner", "en", "test", "refs/convert/parquet")]
    assert sorted(map(tuple, list(d["train"]["ner_tags"]) + list(d["validation"]["ner_tags"]))) == [("B-PER", "O"), ("O",)]
    d = load_splits(cfg_of(dataset="someone/sst", text_column="tokens"))
    assert list(d["test"]["label"]) == ["positive", "negative"]


def test_hub_without_name_is_a_config_error(monkeypatch):
    monkeypatch.delenv("RNNBENCH_DATA", raising=False)
    with pytest.raises(ConfigError) as e:
        load_splits(cfg_of())
    assert one_line(e.value).startswith("task.dataset: empty")


# ---------------------------------------------------------------- errors: one line, file and format


def test_missing_file(tmp_path):
    c = cfg_of(data_dir=str(tmp_path), format="conllu", data_files={"train": "nope.conllu"})
    with pytest.raises(ConfigError) as e:
        load_splits(c)
    msg = one_line(e.value)
    assert "task.data_files.train" in msg and str(tmp_path / "nope.conllu") in msg and "CoNLL-U" in msg


@pytest.mark.parametrize("fmt, content, where", [
    ("label_text", "1 fine\njustoneword\n", "line 2"),
    ("conllu", "1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n2\tbroken line\n", "line 2"),
    ("conll", "EU NNP B-NP B-ORG\nrejects VBZ O\n", "line 2"),
    ("json", '{"text": "ok", "label": 1}\n{not json\n', ""),
    ("csv", 'text,label\n"unterminated,1\n', ""),
])
def test_malformed_file(tmp_path, fmt, content, where):
    f = tmp_path / f"bad.{fmt}"
    f.write_text(content)
    c = cfg_of(data_dir=str(tmp_path), format=fmt, data_files={"train": f.name, "test": f.name},
               text_column="tokens" if fmt.startswith("conll") else "text",
               label_column={"conllu": "upos", "conll": "ner_tags"}.get(fmt, "label"))
    with pytest.raises(ValueError) as e:
        load_splits(c)
    msg = one_line(e.value)
    assert str(f) in msg and "expected" in msg and where in msg, msg


def test_missing_column(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"review": "x", "label": 1}\n')
    c = cfg_of(data_dir=str(tmp_path), format="json", data_files={"train": "d.jsonl", "test": "d.jsonl"})
    with pytest.raises(ConfigError) as e:
        load_splits(c)
    msg = one_line(e.value)
    assert msg.startswith("task.text_column: column 'text' not in") and "d.jsonl" in msg and "review" in msg


def test_data_dir_without_files_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="task.data_files: empty"):
        load_splits(cfg_of(data_dir=str(tmp_path)))


# ---------------------------------------------------------------- parsers on the real files


def test_parsers_on_real_files(data_dir):
    ud = list(text.parse_conllu([str(data_dir / "tagging/ud_en_ewt/en_ewt-ud-dev.conllu")]))
    assert len(ud) == 2001 and sum(len(s["tokens"]) for s in ud) == 25147
    assert set(ud[0]) == {"tokens", "lemmas", "upos", "xpos", "feats", "head", "deprel", "deps", "misc"}
    ner = list(text.parse_conll([str(data_dir / "tagging/conll2003/valid.txt")]))
    assert len(ner) == 3250 and ner[0]["tokens"][0] != "-DOCSTART-"
    assert {t for s in ner for t in s["ner_tags"]} <= {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC",
                                                        "I-LOC", "B-MISC", "I-MISC"}
    sst = list(text.parse_label_text([str(data_dir / "sentiment/sst2/stsa.binary.dev")]))
    assert len(sst) == 872 and {r["label"] for r in sst} == {"0", "1"}


def test_gzip_json(tmp_path):
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        for i in range(4):
            f.write(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n")
    c = cfg_of(data_dir=str(tmp_path), format="json", data_files={"train": "d.jsonl.gz", "test": "d.jsonl.gz"},
               max_train=2, max_eval=3, val_fraction=0.25)
    d = load_splits(c)
    assert (len(d["train"]), len(d["validation"]), len(d["test"])) == (2, 1, 3)


# ---------------------------------------------------------------- tokens and vocabulary


def test_tokenize():
    assert tokenize("A great<br />film, isn't it?", "basic", True) == ["a", "great", "film", ",", "isn't", "it", "?"]
    assert tokenize("a  b", "whitespace") == ["a", "b"]
    assert tokenize("ab", "chars") == ["a", "b"]
    assert tokenize(["Ab", "C"], "none", True) == ["ab", "c"]


def test_vocab_build_order_min_freq_unk():
    train = [["b", "a", "a", "c"], ["a", "b", "d"]]
    v = Vocab.build(train, min_freq=2)
    assert v.itos == ["<pad>", "<unk>", "a", "b"]              # freq desc, then alphabetical
    assert v.encode(["a", "zzz", "c"]) == [2, 1, 1] and v.pad_id == 0 and v.unk_id == 1
    assert v.decode([3, 2]) == ["b", "a"]
    assert Vocab.build(train, max_size=3).itos == ["<pad>", "<unk>", "a"]
    labels = Vocab.labels(["10", "2", "2"])
    assert labels.itos == ["2", "10"] and labels.unk_id is None
    with pytest.raises(KeyError):
        labels["3"]
    cv = char_vocab([["ab", "b"]])
    assert cv.itos == ["<pad>", "<unk>", "b", "a"]


def test_vocab_round_trip_through_weights_only_checkpoint(tmp_path):
    v = Vocab.build([["x", "y", "y"]], specials=("<pad>", "<unk>", "<bos>"))
    torch.save({"vocab": v.to_dict(), "w": torch.zeros(2)}, tmp_path / "c.pt")
    back = Vocab.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["vocab"])
    assert back == v and back["y"] == 3 and back["q"] == v.unk_id


# ---------------------------------------------------------------- batching and padding


def test_bucket_sampler_deterministic_and_bucketed():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1000,), generator=g).tolist()
    s = BucketBatchSampler(lengths, 16, shuffle=True, seed=3, pool=10)
    e0 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(1000)) and len(e0) == len(s)
    assert list(BucketBatchSampler(lengths, 16, shuffle=True, seed=3, pool=10)) == e0
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(i for b in e1 for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in e0) / len(e0)
    assert spread < 40          # pools of 160 sorted: ~20; random batches: ~180
    ev = list(BucketBatchSampler(lengths, 16, shuffle=False))
    flat = [i for b in ev for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_bucket_sampler_shards_over_ranks():
    lengths = list(range(1, 102))
    shards = [list(BucketBatchSampler(lengths, 8, shuffle=True, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(BucketBatchSampler(lengths, 8, num_replicas=2, rank=0))
    covered = {i for sh in shards for b in sh for i in b}
    assert covered == set(range(101))


def test_pad_and_mask():
    x, n = pad([[1, 2, 3], [4]], value=0)
    assert x.tolist() == [[1, 2, 3], [4, 0, 0]] and n.tolist() == [3, 1]
    assert lengths_to_mask(n).tolist() == [[True, True, True], [True, False, False]]
