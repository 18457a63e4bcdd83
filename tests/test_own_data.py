"""Bring your own data: the edges a new user hits with files as published (issue 19): encodings,
empty files, no hub in place of local files, a test split from one file and k-fold, labels unseen in
training, zip archives, stored failures, data errors before the run is claimed, `config --fields`,
the baseline beside the metrics, and the training clock under test_on=best."""
import json
import time
import zipfile

import datasets
import pytest

from bench import cli
from bench import config as C
from bench.config import ConfigError, build
from bench.store import Store
from bench.sweep import LocalExecutor, expand
from bench.train import run
from tasks.registry import TASKS, task_class
from tasks.text import TextDataConfig, load_splits

LINES = "".join(f"{i % 2} word{i} common\n" for i in range(40))


def cfg_of(**kw) -> TextDataConfig:
    return build(TextDataConfig, kw, "task.")


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


def label_text(tmp_path, **kw):
    return cfg_of(data_dir=str(tmp_path), format="label_text", **kw)


# ---------------------------------------------------------------- encoding and empty files


def test_not_utf8_names_the_line_and_task_encoding_reads_it(tmp_path):
    (tmp_path / "tr.txt").write_bytes(LINES.encode() + "1 caf\xe9 cr\xe8me\n".encode("latin-1") + b"0 end\n")
    files = {"train": "tr.txt", "test": "tr.txt"}
    with pytest.raises(ValueError) as e:
        load_splits(label_text(tmp_path, data_files=files))
    assert one_line(e.value) == (f"{tmp_path / 'tr.txt'}: not UTF-8 at line 41 (byte 0xe9); "
                                 f"set task.encoding, e.g. task.encoding=latin-1")
    d = load_splits(label_text(tmp_path, data_files=files, encoding="latin-1"))
    assert "café crème" in list(d["test"]["text"])


@pytest.mark.parametrize("fmt", ["json", "csv", "text"])
def test_encoding_reaches_the_datasets_builders(tmp_path, fmt):
    body = {"json": '{"text": "caf\xe9", "label": 1}\n', "csv": "text,label\ncaf\xe9,1\n", "text": "caf\xe9\n"}[fmt]
    (tmp_path / "d").write_bytes(body.encode("cp1252"))
    kw = dict(data_dir=str(tmp_path), format=fmt, data_files={"train": "d", "validation": "d", "test": "d"})
    with pytest.raises(ValueError, match="not UTF-8 at line"):
        load_splits(cfg_of(**kw))
    d = load_splits(cfg_of(**kw, encoding="cp1252"), need=["text"])
    assert list(d["test"]["text"]) == ["café"]


def test_bad_encoding_name_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        cfg_of(encoding="utf-9")
    assert one_line(e.value) == ("task.encoding: invalid value 'utf-9'; allowed: a Python codec name, "
                                 "e.g. utf-8, latin-1, cp1252")


@pytest.mark.parametrize("fmt, content", [("label_text", ""), ("json", "\n\n"), ("conllu", "  \n")])
def test_empty_file_says_empty(tmp_path, fmt, content):
    (tmp_path / "e").write_text(content)
    with pytest.raises(ValueError) as e:
        load_splits(cfg_of(data_dir=str(tmp_path), format=fmt, data_files={"train": "e", "test": "e"}))
    assert one_line(e.value).startswith(f"{tmp_path / 'e'}: empty file; expected ")


# ---------------------------------------------------------------- local files win over the hub


def _no_hub(monkeypatch):
    real = datasets.load_dataset

    def guard(name, *a, **kw):
        assert name in ("json", "csv", "text", "parquet"), f"went to the hub for {name}"
        return real(name, *a, **kw)
    monkeypatch.setattr(datasets, "load_dataset", guard)
    monkeypatch.delenv("RNNBENCH_DATA", raising=False)


def test_local_files_without_data_dir_are_read_from_the_current_directory(tmp_path, monkeypatch):
    _no_hub(monkeypatch)
    (tmp_path / "tr.txt").write_text(LINES)
    monkeypatch.chdir(tmp_path)
    cfg = C.load(None, ["task=sst2", "task.data_files={train: tr.txt, test: tr.txt}"])
    assert cfg.task.dataset == "SetFit/sst2"          # the preset names a hub set; the user's files win
    dm = task_class("sentiment")(cfg).datamodule()
    dm.setup()
    assert len(dm.examples["test"]) == 40
    assert dm.info["source"]["train"] == str(tmp_path / "tr.txt")


def test_missing_local_files_never_fall_back_to_the_hub(tmp_path, monkeypatch):
    _no_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    dm = task_class("sentiment")(C.load(None, ["task=sst2"])).datamodule()
    with pytest.raises(ConfigError) as e:
        dm.setup()
    assert one_line(e.value) == (
        f"task.data_files.train: file {tmp_path}/sentiment/sst2/stsa.binary.train not found (relative to the "
        f"current directory: neither task.data_dir nor $RNNBENCH_DATA is set; to use the hub data set "
        f"SetFit/sst2 instead, set task.data_files={{}}); expected one example a line: '<label> <text>' "
        f"(SST stsa.binary style)")


def test_no_data_named_is_an_error(monkeypatch):
    monkeypatch.delenv("RNNBENCH_DATA", raising=False)
    with pytest.raises(ConfigError, match=r"^task.dataset: empty and no local data"):
        load_splits(cfg_of(data_files={}))


# ---------------------------------------------------------------- a test split from one file, k-fold


def test_test_fraction_is_seeded_by_data_seed(tmp_path):
    (tmp_path / "all.txt").write_text(LINES)
    c = label_text(tmp_path, data_files={"train": "all.txt"}, test_fraction=0.25, val_fraction=0.2)
    d = load_splits(c)
    assert (len(d["train"]), len(d["validation"]), len(d["test"])) == (24, 6, 10)
    assert list(load_splits(c)["test"]["text"]) == list(d["test"]["text"])
    other = load_splits(label_text(tmp_path, data_files={"train": "all.txt"}, test_fraction=0.25, data_seed=9))
    assert list(other["test"]["text"]) != list(d["test"]["text"])
    assert not set(d["test"]["text"]) & (set(d["train"]["text"]) | set(d["validation"]["text"]))


def test_k_folds_test_every_example_once(tmp_path):
    (tmp_path / "all.txt").write_text(LINES)
    tests = []
    for fold in range(4):
        d = load_splits(label_text(tmp_path, data_files={"train": "all.txt"}, folds=4, fold=fold))
        assert len(d["test"]) == 10 and len(d["train"]) + len(d["validation"]) == 30
        assert not set(d["test"]["text"]) & set(d["train"]["text"])
        tests += list(d["test"]["text"])
    assert sorted(tests) == sorted(line.split(None, 1)[1] for line in LINES.splitlines())


def test_k_fold_is_a_sweep_dimension(tmp_path):
    (tmp_path / "all.txt").write_text(LINES)
    sweep = tmp_path / "cv.yaml"
    sweep.write_text(f"name: cv\nmethod: grid\nparameters:\n  task: {{value: sst2}}\n"
                     f"  task.data_dir: {{value: {tmp_path}}}\n  task.data_files: {{value: {{train: all.txt}}}}\n"
                     f"  task.folds: {{value: 4}}\n  task.fold: {{values: [0, 1, 2, 3]}}\n")
    name, cfgs = expand(sweep)
    assert name == "cv" and [c.task.fold for c in cfgs] == [0, 1, 2, 3]
    assert len({c.hash for c in cfgs}) == 4


@pytest.mark.parametrize("overrides, msg", [
    (["task.fold=4", "task.folds=4"], "task.fold: invalid value 4; allowed: 0 .. 3 (task.folds=4)"),
    (["task.fold=1"], "task.fold: 1 without task.folds; allowed: 0, or set task.folds"),
    (["task.folds=5", "task.test_fraction=0.1"], "task.folds: conflicts with test_fraction; allowed: one of them"),
    (["task.folds=5"], "task.folds: the data has a test file (task.data_files.test); allowed: null, or "
                       "task.data_files.test=null to carve the test split from train"),
])
def test_fold_config_errors(overrides, msg):
    with pytest.raises(ConfigError) as e:
        C.load(None, ["task=sst2", *overrides])
    assert one_line(e.value) == msg


def test_no_test_split_says_how_to_carve_one(tmp_path):
    (tmp_path / "all.txt").write_text(LINES)
    with pytest.raises(ConfigError) as e:
        load_splits(label_text(tmp_path, data_files={"train": "all.txt"}))
    assert one_line(e.value) == ("task.data_files: no 'test' split; allowed: a test entry (train, validation, "
                                 "test), or carve one from train with task.test_fraction=0.1 or task.folds=10")


# ---------------------------------------------------------------- labels unseen in training


def _conll(tmp_path):
    (tmp_path / "tr.txt").write_text("EU B-NP\nrejects B-VP\n\nGerman B-NP\ncall I-NP\n\n")
    (tmp_path / "te.txt").write_text("1. B-LST\nEU B-NP\n\n")
    return ["task.name=tagging", f"task.data_dir={tmp_path}", "task.format=conll", "task.columns=[tokens, chunk]",
            "task.label_column=chunk", "task.data_files={train: tr.txt, validation: tr.txt, test: te.txt}"]


def test_unseen_tag_maps_to_the_fallback_and_is_recorded(tmp_path):
    dm = task_class("tagging")(C.load(None, _conll(tmp_path))).datamodule()
    dm.setup()
    tag = dm.vocabs["tag"]
    assert [tag.itos[i] for i in dm.examples["test"][0]["tags"]] == ["B-NP", "B-NP"]   # most frequent
    assert dm.info["labels"] == {"mode": "fallback", "fallback": "B-NP", "unseen": {"test": {"B-LST": 1}}}
    dm = task_class("tagging")(C.load(None, _conll(tmp_path) + ["task.fallback_label=I-NP"])).datamodule()
    dm.setup()
    assert [dm.vocabs["tag"].itos[i] for i in dm.examples["test"][0]["tags"]] == ["I-NP", "B-NP"]


def test_unseen_tag_as_an_error(tmp_path):
    dm = task_class("tagging")(C.load(None, _conll(tmp_path) + ["task.unseen_labels=error"])).datamodule()
    with pytest.raises(ValueError) as e:
        dm.setup()
    assert one_line(e.value) == ("test split: tag(s) B-LST not among the training tags B-NP, B-VP, I-NP "
                                 "(column 'chunk'); allowed: task.unseen_labels=fallback maps them to 'B-NP'")


def test_fallback_label_must_be_a_training_label(tmp_path):
    dm = task_class("tagging")(C.load(None, _conll(tmp_path) + ["task.fallback_label=O"])).datamodule()
    with pytest.raises(ConfigError, match=r"^task.fallback_label: invalid value 'O'; allowed: a training tag: B-NP"):
        dm.setup()


# ---------------------------------------------------------------- zip archives


def test_zip_archive_of_one_file_is_read(tmp_path):
    (tmp_path / "tr.txt").write_text(LINES)
    with zipfile.ZipFile(tmp_path / "tr.zip", "w") as z:
        z.write(tmp_path / "tr.txt", "data/tr.txt")
    d = load_splits(label_text(tmp_path, data_files={"train": "tr.zip", "test": "tr.zip"}))
    assert len(d["test"]) == 40
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.write(tmp_path / "d.jsonl", "d.jsonl")
    d = load_splits(cfg_of(data_dir=str(tmp_path), format="json", data_files={"train": "d.zip", "test": "d.zip"}))
    assert list(d["test"]["text"]) == ["a", "b"]


def test_zip_archive_of_several_files_says_so(tmp_path):
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as z:
        z.writestr("train.txt", LINES)
        z.writestr("test.txt", LINES)
    with pytest.raises(ValueError) as e:
        load_splits(label_text(tmp_path, data_files={"train": "all.zip", "test": "all.zip"}))
    assert one_line(e.value) == (f"{tmp_path / 'all.zip'}: a zip archive of 2 files (train.txt, test.txt); "
                                 f"expected one data file in it, or unpack it and name the files in task.data_files")


# ---------------------------------------------------------------- stored failures, errors before the claim


TINY = ["task=adding", "task.T=5", "task.eval_size=64", "model.hidden_size=8", "trainer.max_steps=4",
        "trainer.val_every=2"]


def test_data_error_stops_before_the_run_is_claimed(tmp_path, capsys):
    (tmp_path / "tr.txt").write_bytes(b"1 ok\n0 caf\xe9\n")
    over = ["task.name=sentiment", f"task.data_dir={tmp_path}", "task.data_files={train: tr.txt, test: tr.txt}"]
    store = tmp_path / "results"
    assert cli.main(["train", *over, "--store", str(store), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert err == f"rnnbench train: error: {tmp_path / 'tr.txt'}: not UTF-8 at line 2 (byte 0xe9); " \
                  f"set task.encoding, e.g. task.encoding=latin-1\n"
    assert not Store(store).run_dir(C.load(None, over).hash).exists()


def test_stored_failure_says_so(tmp_path, capsys):
    store = tmp_path / "results"
    cfg = C.load(None, TINY)
    failed = {"hash": cfg.hash, "status": "failed", "error": "RuntimeError: boom", "metrics": {},
              "finished_at": "2026-12-01T10:00:00+0000"}
    d = Store(store).run_dir(cfg.hash)
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(failed))
    assert cli.main(["train", *TINY, "--store", str(store), "--wandb", "disabled"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["  error: RuntimeError: boom",
                        "  stored failure from 2026-12-01T10:00:00+0000; rerun with --retry-failed"]


def test_a_run_that_failed_on_its_data_is_run_again(tmp_path):
    store = tmp_path / "results"
    cfg = C.load(None, TINY)
    d = Store(store).run_dir(cfg.hash)
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"hash": cfg.hash, "status": "failed", "failed_on": "data",
                                               "error": "x: empty file", "metrics": {}}))
    r = run(cfg, store, wandb_mode="disabled")
    assert r["status"] == "done" and "stored" not in r and Store(store).result(cfg.hash)["status"] == "done"
    assert run(cfg, store, wandb_mode="disabled")["stored"] is True


def test_sweep_records_a_data_failure_to_rerun(tmp_path):
    store = Store(tmp_path / "results")
    cfg = C.load(None, TINY)
    d = store.run_dir(cfg.hash)
    d.mkdir(parents=True)
    (d / "run.log").write_text("some warning\nrnnbench train: error: /x/tr.txt: empty file; expected JSON\n")
    ex = LocalExecutor(store, "s", workers=1, progress=False)
    assert ex._finish(cfg, 2) == "failed"
    r = store.result(cfg.hash)
    assert (r["error"], r["failed_on"]) == ("/x/tr.txt: empty file; expected JSON", "data")
    assert ex.todo([cfg]) == [cfg]


# ---------------------------------------------------------------- what the CLI shows


def test_config_fields_lists_every_family(capsys):
    assert cli.main(["config", "--fields"]) == 0
    out = capsys.readouterr().out
    assert "see the task presets" not in out
    for name in TASKS:
        block = out.split(f"# task.name={name}\n", 1)[1].split("\n# task.name=", 1)[0]
        for f in task_class(name).Config.__dataclass_fields__:
            assert f"\ntask.{f} = " in "\n" + block, (name, f)
    assert "task.unseen_labels = 'fallback'  [str] one of fallback, error" in out
    assert "task.tokenizer = 'none'  [str] one of whitespace, basic, chars, none" in out


def test_train_prints_the_baseline_beside_the_metrics(tmp_path, capsys):
    assert cli.main(["train", *TINY, "--store", str(tmp_path / "r"), "--wandb", "disabled"]) == 0
    out = capsys.readouterr().out.splitlines()
    r = Store(tmp_path / "r").result(C.load(None, TINY).hash)
    base = "  ".join(f"{k}={v:.4g}" for k, v in sorted(r["baseline"].items()))
    verdict = "beats it" if r["beats_baseline"] else "does not beat it"
    assert out[2] == f"  baseline: {base}  ({r['primary']}: {verdict})"


def test_wall_time_with_test_on_best_is_the_training_time(tmp_path):
    """Testing best.ckpt restores the Timer as it was at that checkpoint: the training time is read
    before. It equals the Timer state in last.ckpt (saved at the last validation, the end of
    training), not that plus the best checkpoint's time, as before the fix."""
    import torch

    cfg = C.load(None, ["task=adding", "task.T=20", "task.eval_size=64", "model.hidden_size=32",
                        "trainer.max_steps=120", "trainer.val_every=30", "trainer.test_on=best"])
    t0 = time.time()
    r = run(cfg, tmp_path / "r", wandb_mode="disabled")
    elapsed = time.time() - t0
    assert r["status"] == "done" and r["tested"]["checkpoint"] == "best"
    ckpt = Store(tmp_path / "r").run_dir(cfg.hash) / "checkpoints"
    last, best = (torch.load(ckpt / f"{n}.ckpt", weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"]
                  for n in ("last", "best"))
    assert last <= r["wall_time_s"] < last + 0.5 * best and r["wall_time_s"] <= elapsed, (r["wall_time_s"], last, best)


# ---------------------------------------------------------------- the README's worked examples


def _readme_commands() -> list[list[str]]:
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("## Bring your own data", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "), comments=True)
    cmds = []
    for i, w in enumerate(words):
        if words[i - 1: i + 1] == ["rnnbench", "train"]:
            cmds.append([])
        elif w != "rnnbench":
            cmds[-1].append(w)
    return cmds


def _byod_files(d):
    import gzip

    (d / "rt-polarity.txt").write_bytes("".join(f"{i % 2} a caf\xe9 line {i}\n" for i in range(40)).encode("latin-1"))
    (d / "reviews.csv").write_text("review,stars\n" + "".join(f"text {i} here,{i % 3}\n" for i in range(30)))
    chunk = "He PRP B-NP\nran VBD B-VP\n\nA DT B-NP\ndog NN I-NP\n\n"
    with gzip.open(d / "train.txt.gz", "wt") as f:
        f.write(chunk * 5)
    with gzip.open(d / "test.txt.gz", "wt") as f:
        f.write(chunk + "1. LS B-LST\n\n")
    ud = "".join(f"{i}\tw{i}\tw\t{'NOUN' if i % 2 else 'VERB'}\t_\t_\t0\troot\t_\t_\n" for i in (1, 2, 3)) + "\n"
    with zipfile.ZipFile(d / "de_gsd-ud-train.conllu.zip", "w") as z:
        z.writestr("de_gsd-ud-train.conllu", ud * 5)
    for s in ("dev", "test"):
        (d / f"de_gsd-ud-{s}.conllu").write_text(ud)
    for s in ("train", "val", "test"):
        (d / f"{s}.fr").write_text("".join(f"un chat {i} .\n" for i in range(12)))
        (d / f"{s}.en").write_text("".join(f"a cat {i} .\n" for i in range(12)))
    (d / "corpus.txt").write_text("".join(f"the cat sat on mat {i}\n" for i in range(400)))
    (d / "prices.csv").write_text("date,open,close\n" + "".join(f"2020-01-{i:03d},{i + 1},{i + 2}\n" for i in range(300)))


def test_readme_worked_examples_load(tmp_path):
    """Every `rnnbench train` example of the README section loads its data as written."""
    _byod_files(tmp_path)
    cmds = _readme_commands()
    assert len(cmds) == 7
    for words in cmds:
        over = [w.replace("DIR", str(tmp_path)) for w in words] + ["task.batch_size=2", "task.eval_batch_size=2"]
        cfg = C.load(None, over)
        dm = task_class(cfg.task.name)(cfg).datamodule()
        dm.setup("fit")
        if cfg.task.name == "tagging" and cfg.task.label_column == "chunk":
            assert dm.info["labels"]["unseen"] == {"test": {"B-LST": 1}}
