"""Treebank family: the PTB tree parser on the real SST trees and on edge cases, its error messages,
level batching against plain recursion (values and gradients), learning on a slice, bring-your-own
trees, phrase supervision for sequence cells, and the family through sweep + report + leaderboard."""
import json

import lightning as L
import pytest
import torch

from bench.config import ConfigError, load
from models.registry import TREE_CELLS, cell_class
from models.tree.base import batch_trees
from tasks.registry import task_class
from tasks.trees import PTB_HELP, TreeError, parse_tree

SST = "sentiment/sst_trees"
SLICE = ["task=sst_trees", "task.max_train=120", "task.max_eval=40", "model.cell=treelstm_nary",
         "model.hidden_size=8", "model.embedding_size=8"]


def make(*overrides):
    cfg = load(None, list(overrides))
    task = task_class(cfg.task.name)(cfg)
    dm = task.datamodule()
    dm.setup()
    return cfg, task, dm


# ---------------------------------------------------------------- parser


def test_parser_on_the_real_trees(data_dir):
    counts = {}
    for split, n_nodes in (("train", 318_582), ("dev", 41_447), ("test", 82_600)):
        lines = (data_dir / SST / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        trees = [parse_tree(x) for x in lines]
        counts[split] = (len(trees), sum(len(t) for t in trees))
        assert counts[split][1] == n_nodes
        for t in trees:
            assert all(len(c) == 2 for c in t.children if c)         # SST trees are binary
            assert len(t.leaves) == (len(t) + 1) // 2
    assert [c[0] for c in counts.values()] == [8544, 1101, 2210]
    first = parse_tree(lines[0])                 # test.txt line 1: (2 (3 (3 Effective) (2 but)) (1 ...
    assert first.tokens() == ["Effective", "but", "too-tepid", "biopic"]
    assert first.labels == ["3", "2", "3", "1", "2", "1", "2"] and first.children[-1] == [2, 5]
    assert first.spans() == [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4), (2, 4), (0, 4)]
    assert first.heights() == [0, 0, 1, 0, 0, 1, 2]
    train = (data_dir / SST / "train.txt").read_text(encoding="utf-8").splitlines()
    words = {w for x in train for w in parse_tree(x).tokens()}
    assert {"(", ")", "8 1/2", "9/11", "*"} <= words                # -LRB- -RRB-, a spaced word, \/ and \*
    assert not any("-LRB-" in w or "\\/" in w for w in words)
    raw = {w for x in train for w in parse_tree(x, unescape_words=False).tokens()}
    assert {"-LRB-", "-RRB-", "8 1\\/2"} <= raw


def test_parser_edge_cases():
    t = parse_tree("(4 great)")                                    # a one-word sentence
    assert (t.labels, t.words, t.children, t.heights()) == (["4"], ["great"], [[]], [0])
    t = parse_tree("  (1 (2 (0 not)) (3 (3 very) (4 good) (2 -RRB-)) )\n")   # unary and ternary nodes
    assert t.labels == ["0", "2", "3", "4", "2", "3", "1"]
    assert t.words == ["not", "", "very", "good", ")", "", ""]
    assert t.children == [[], [0], [], [], [], [2, 3, 4], [1, 5]]
    assert t.heights() == [0, 1, 0, 0, 0, 1, 2] and t.spans()[-1] == (0, 4) and t.spans()[5] == (1, 4)
    assert parse_tree("(2 (2 a\\/b) (2 \\*))").tokens() == ["a/b", "*"]


@pytest.mark.parametrize("text,column,what", [
    ("", 1, "expected a tree, got an empty line"),
    ("2 (3 x)", 1, "expected '(' to open a tree, got '2'"),
    ("(3 (2 a) (2 b)", 15, "expected ')': 1 node(s) left open at the end of the line"),
    ("(3 (2 a) (2 b)))", 16, "expected the end of the line after the tree's closing ')'"),
    (")", 1, "expected '(' to open a tree, got ')'"),
    ("(3 (2 a) (2 b)) (1 c)", 17, "expected the end of the line after the tree's closing ')'"),
    ("(3 (2 a (2 b)))", 9, "expected ')' after the word 'a' (a leaf is '(label word)')"),
    ("(3 ())", 5, "expected a label after '('"),
    ("(3 (2 a) b)", 10, "expected '(' or ')', got the bare word 'b' (a leaf is '(label word)')"),
    ("(3 (2))", 6, "expected a word or a subtree before ')'"),
])
def test_parser_errors(text, column, what):
    with pytest.raises(TreeError) as e:
        parse_tree(text)
    assert str(e.value) == f"malformed tree at column {column}: {what}"


def test_malformed_file_names_file_and_line(tmp_path):
    (tmp_path / "train.txt").write_text("(3 (2 a) (4 b))\n\n(1 (2 a) (0 b)\n")
    (tmp_path / "test.txt").write_text("(3 (2 a) (4 b))\n")
    with pytest.raises(ValueError) as e:
        make("task=sst_trees", f"task.data_dir={tmp_path}", 'task.data_files={"train": "train.txt", "test": "test.txt"}')
    assert str(e.value) == (f"{tmp_path / 'train.txt'} line 3: malformed tree at column 15: expected ')': "
                            f"1 node(s) left open at the end of the line; {PTB_HELP}")


# ---------------------------------------------------------------- data


def test_sst_datamodule_and_baselines(data_dir):
    cfg, task, dm = make(*SLICE)
    assert [len(dm.examples[s]) for s in ("train", "validation", "test")] == [120, 40, 40]
    lines = (data_dir / SST / "train.txt").read_text().splitlines()[:120]
    word = dm.vocabs["word"]
    assert set(word.itos[2:]) == {w for x in lines for w in parse_tree(x).tokens()}   # train only
    assert dm.vocabs["label"].itos == ["0", "1", "2", "3", "4"] and dm.to_binary == [0, 0, -100, 1, 1]
    batches = list(dm.train_dataloader())
    assert sorted(len(x.root) for x in batches) == [20, 25, 25, 25, 25]
    b = batches[0]
    assert b.num_nodes == int(b.leaves.numel() + sum(n.numel() for n in b.level_nodes))
    assert (b.word[b.leaves] >= 0).all() and (b.word[torch.cat(b.level_nodes)] == -1).all()
    y, root = dm.node_labels("test")
    gold_root = [v for v, r in zip(y, root) if r]
    base = task.baseline()
    assert set(base) == {"test/fine_root", "test/fine_all", "test/binary_root", "test/binary_all"}
    train_y, train_root = dm.node_labels("train")
    top = max(set(v for v, r in zip(train_y, train_root) if r),
              key=[v for v, r in zip(train_y, train_root) if r].count)
    assert base["test/fine_root"] == pytest.approx(gold_root.count(top) / 40)


def test_bring_your_own_trees(tmp_path):
    (tmp_path / "a.txt").write_text("(4 (3 (2 a) (4 fine)) (2 film))\n(0 (1 (2 a) (0 dull)) (2 (2 -LRB-) (2 film\\/s)))\n")
    (tmp_path / "b.txt").write_text("(4 (2 a) (4 fine))\n")
    files = '{"train": "a.txt", "validation": "b.txt", "test": "b.txt"}'
    cfg, task, dm = make("task.name=treebank", f"task.data_dir={tmp_path}", f"task.data_files={files}",
                         "model.cell=treelstm_childsum", "model.hidden_size=4", "model.embedding_size=4")
    assert dm.vocabs["word"].itos == ["<pad>", "<unk>", "a", "(", "dull", "film", "film/s", "fine"]
    assert [len(dm.examples[s]) for s in ("train", "validation", "test")] == [2, 1, 1]
    assert task.baseline()["test/fine_root"] == 1.0 and cfg.task.format == "ptb_trees"
    (tmp_path / "vec.txt").write_text("fine 1 2 3 4\nnope 0 0 0 0\n")
    cfg, task, dm = make("task.name=treebank", f"task.data_dir={tmp_path}", f"task.data_files={files}",
                         "model.cell=rntn", "model.hidden_size=4", "model.embedding_size=4",
                         f"task.embeddings={tmp_path / 'vec.txt'}")
    module = task.module(dm)
    info = task.pretrained(module)                               # task.embeddings into the tree model
    assert info["words_found"] == 1 and module.net.embed.weight[dm.vocabs["word"]["fine"]].tolist() == [1, 2, 3, 4]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.embedding_size: cell 'rntn' uses the word vectors as leaf "
                                          r"vectors; allowed: equal to model.hidden_size \(8\), got 64$"):
        load(None, ["task=sst_trees", "model.cell=rntn", "model.hidden_size=8"])
    with pytest.raises(ConfigError, match=r"^model.peepholes: not available for cell 'treelstm_nary'"):
        load(None, ["task=sst_trees", "model.cell=treelstm_nary", "model.peepholes=true"])
    with pytest.raises(ConfigError, match=r"^task.classes: invalid value 'three'; allowed: fine, binary$"):
        load(None, ["task=sst_trees", "task.classes=three"])
    cfg = load(None, ["task=sst2", "model.cell=recnn", "model.hidden_size=8", "model.embedding_size=8"])
    with pytest.raises(ConfigError, match=r"^model.cell: 'recnn' is a tree cell, for task.name=treebank only"):
        task_class("sentiment")(cfg).module()
    (tmp_path / "t.txt").write_text("(4 (3 (2 a) (4 fine) (2 !)) (2 film))\n")
    files = '{"train": "t.txt", "validation": "t.txt", "test": "t.txt"}'
    _, task, dm = make("task.name=treebank", f"task.data_dir={tmp_path}", f"task.data_files={files}",
                       "model.cell=recnn", "model.hidden_size=4", "model.embedding_size=4")
    with pytest.raises(ConfigError, match=r"^model.cell: 'recnn' needs binary trees, but the data has nodes with 3 "
                                          r"children; allowed: treelstm_childsum$"):
        task.module(dm)


# ---------------------------------------------------------------- level batching == recursion


def random_tree(rng: torch.Generator, n_leaves: int, vocab: int, max_k: int) -> dict:
    """Random bracketing of n_leaves words (post-order), arity 2..max_k."""
    word, children, frontier = [], [], []
    for _ in range(n_leaves):
        word.append(int(torch.randint(2, vocab, (1,), generator=rng)))
        children.append([])
        frontier.append(len(word) - 1)
    while len(frontier) > 1:
        k = min(len(frontier), int(torch.randint(2, max_k + 1, (1,), generator=rng)))
        s = int(torch.randint(0, len(frontier) - k + 1, (1,), generator=rng))
        kids = frontier[s:s + k]
        word.append(-1)
        children.append(kids)
        frontier[s:s + k] = [len(word) - 1]
    # renumber into post-order
    order = []

    def visit(i):
        for c in children[i]:
            visit(c)
        order.append(i)
    visit(frontier[0])
    new = {old: j for j, old in enumerate(order)}
    children = [[new[c] for c in children[i]] for i in order]
    heights = []
    for c in children:
        heights.append(1 + max(heights[k] for k in c) if c else 0)
    labels = torch.randint(0, 5, (len(order),), generator=rng).tolist()
    return {"word": [word[i] for i in order], "children": children, "height": heights, "label": labels}


@pytest.mark.parametrize("cell", list(TREE_CELLS))
def test_level_batching_equals_recursion(cell):
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    max_k = 3 if cell == "treelstm_childsum" else 2
    trees = [random_tree(rng, n, 30, max_k) for n in (1, 2, 5, 9, 13)]
    cfg = load(None, ["task=sst_trees", f"model.cell={cell}", "model.hidden_size=6", "model.embedding_size=6"])
    net = cell_class(cell)(30, 5, cfg.model).double()
    b = batch_trees(trees)
    assert len(b.level_nodes) == max(max(t["height"]) for t in trees)
    out = net(b)
    ref = torch.cat([net.forward_recursive(t["word"], t["children"]) for t in trees])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(out)
    g_batched = torch.autograd.grad((out * w).sum(), list(net.parameters()), allow_unused=True)
    ref = torch.cat([net.forward_recursive(t["word"], t["children"]) for t in trees])
    g_rec = torch.autograd.grad((ref * w).sum(), list(net.parameters()), allow_unused=True)
    for (name, _), a, r in zip(net.named_parameters(), g_batched, g_rec):
        assert (a is None) == (r is None), name
        if a is not None:
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12, msg=name)
    assert sum(float(a.abs().sum()) for a in g_batched if a is not None) > 0


# ---------------------------------------------------------------- learning and sequence cells


def fit(cfg, task, dm, epochs: int):
    module = task.module(dm)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        accelerator="cpu", deterministic=True)
    trainer.fit(module, datamodule=dm)
    return module, trainer


@pytest.mark.parametrize("cell", ["rntn", "treelstm_nary"])
def test_learning_beats_the_majority_class_on_a_training_slice(cell, tmp_path):
    """Trained and scored on the same 150 training trees: fine accuracy over all nodes beats
    predicting the majority node label of the slice."""
    cfg, task, dm = make("task=sst_trees", "task.max_train=150", "task.max_eval=10", f"model.cell={cell}",
                         "model.hidden_size=16", "model.embedding_size=16", "optim=adagrad", "optim.lr=0.1")
    module, trainer = fit(cfg, task, dm, 8)
    y, root = dm.node_labels("train")
    majority = max(y.count(k) for k in set(y)) / len(y)
    dm.examples["test"], dm.lengths["test"] = dm.examples["train"], dm.lengths["train"]
    res = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert res["test/fine_all"] > majority + 0.05, (res, majority)


def test_phrase_supervision_for_sequence_cells():
    cfg, task, dm = make(*SLICE, "model.cell=lstm", "model.hidden_size=8", "model.embedding_size=8",
                         "model.bidirectional=true", "task.batch_size=64")
    train_nodes = sum(len(t) for t in dm.trees["train"])
    assert len(dm.examples["train"]) == train_nodes                # every labelled span
    assert sum(e["root"] for e in dm.examples["test"]) == 40 and len(dm.examples["test"]) == sum(
        len(t) for t in dm.trees["test"])
    t = dm.trees["train"][0]
    word = dm.vocabs["word"]
    assert dm.examples["train"][len(t) - 1]["ids"] == word.encode(t.tokens())
    _, _, roots = make(*SLICE, "model.cell=gru", "task.phrases=root", "task.classes=binary")
    assert all(e["root"] for e in roots.examples["train"]) and len(roots.examples["train"]) <= 120
    module, trainer = fit(cfg, task, dm, 1)
    res = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert set(res) == {"test/loss", "test/fine_root", "test/fine_all", "test/binary_root", "test/binary_all"}


def test_adagrad_and_binary_classes():
    cfg, task, dm = make(*SLICE, "model.cell=recnn", "model.hidden_size=8", "model.embedding_size=8",
                         "optim=adagrad", "task.classes=binary")
    module = task.module(dm)
    assert isinstance(module.configure_optimizers(), torch.optim.Adagrad)
    assert task.primary == "test/binary_root" and module.net.head.out_features == 2
    assert set(task.baseline()) == {"test/binary_root", "test/binary_all"}


# ---------------------------------------------------------------- sweep, report, leaderboard


def test_sweep_report_and_leaderboard_over_the_family(tmp_path):
    from bench.store import Store
    from bench.sweep import expand
    from bench.train import run
    from reports.leaderboard import build_leaderboard
    from reports.report import build_report

    path = tmp_path / "trees.yaml"
    path.write_text("""
name: trees
method: grid
parameters:
  task: {value: {name: treebank, max_train: 60, max_eval: 30}}
  model:
    values:
      - {cell: recnn, hidden_size: 8, embedding_size: 8}
      - {cell: treelstm_childsum, hidden_size: 8, embedding_size: 8}
  seed: {values: [0, 1]}
  optim: {value: adagrad}
  trainer: {value: {max_steps: 4, val_every: 2}}
""")
    name, cfgs = expand(path)
    store = Store(tmp_path / "results")
    store.record_sweep(name, [c.hash for c in cfgs])      # as the executor does; runs in this process
    assert [run(c, store.root, sweep=name, wandb_mode="disabled")["status"] for c in cfgs] == ["done"] * 4
    md = build_report(store, [name], tmp_path / "report").read_text()
    assert "test/fine_root" in md and "recnn" in md and "treelstm_childsum" in md
    paths = build_leaderboard(store, [name], tmp_path / "lb")
    rows = json.loads(paths["json"].read_text())["rows"]
    assert {r["metric"] for r in rows} == {"test/fine_root"} and len(rows) == 2
    assert all(r["baseline"] is not None and r["n"] == 2 for r in rows)


def test_bench_trees_compares_level_batching_with_recursion(capsys):
    from bench.benchmarks import trees as bench_trees

    out = bench_trees.main(["--cells", "recnn,treelstm_childsum", "--batch-size", "3", "--batches", "1",
                            "--repeats", "1", "model.hidden_size=4", "model.embedding_size=4"])
    assert [r["cell"] for r in out] == ["recnn", "treelstm_childsum"] and all(r["trees"] == 3 for r in out)
    assert all(r["ratio"] > 0 for r in out) and "level-batched" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--cells: unknown tree cell 'lstm'"):
        bench_trees.main(["--cells", "lstm"])


def test_published_table_of_the_paper_report():
    from reports.claims import load_claims, matches
    from reports.published_table import published_table

    claims = load_claims("socher")
    runs = [{"config": {"seed": s, "model": {"cell": "rntn"}}, "status": st, "wall_time_s": 100.0,
             "metrics": {"test/fine_root": v, "test/binary_root": 0.86}}
            for s, v, st in ((0, 0.44, "done"), (1, 0.46, "done"), (2, None, "failed"))]
    md = published_table(claims["published"], runs, matches)
    row = next(x for x in md.splitlines() if x.startswith("| RNTN"))
    assert row.split(" | ")[1:3] == ["45.7 / 44.0 / 45.0 ± 1.4 (n=2) ✓", "85.4 / 84.0 / 86.0 ± 0.0 (n=2) ✓"]
    assert row.endswith("| 100 | failed: seed 2 |")
    assert "| RNN (recnn, d=30) | 43.2 / 42.0 / — |" in md
