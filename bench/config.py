"""Run configuration: dataclass schemas, YAML presets, `key=value` overrides, validation, hashing.

A run is defined by its resolved config (every field filled in). Layers, later wins:
dataclass defaults < config file < overrides. A section given as a string (`task=copy`) is
replaced by the preset file `bench/configs/<section>/<name>.yaml`.
"""
from __future__ import annotations

import copy
import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.schema import ConfigError, build, config_hash, describe, fmt_value, hash_view, opt, parse_value
from bench.divergence import EXPLODED
from models.config import ModelConfig
from models.registry import TREE_CELLS
from tasks.base import OPTIMIZERS, TaskConfig
from tasks.registry import TASKS, task_class

CONFIG_DIR = Path(__file__).parent / "configs"
SECTIONS = ("task", "model", "optim", "trainer")


# ---------------------------------------------------------------- sections owned by bench


@dataclass
class OptimConfig:
    name: str = opt("adam", choices=lambda: list(OPTIMIZERS), help="optimizer (tasks/base.py OPTIMIZERS)")
    lr: float = opt(1e-3, gt=0, help="learning rate")
    momentum: float = opt(0.0, ge=0, lt=1, help="SGD/RMSprop momentum")
    alpha: float = opt(0.99, gt=0, lt=1, help="RMSprop decay of the squared-gradient average")
    weight_decay: float = opt(0.0, ge=0)
    grad_clip: Optional[float] = opt(1.0, gt=0, help="clip gradients by global norm; null = off")
    plateau_factor: Optional[float] = opt(None, gt=0, lt=1, help="multiply lr by this when val loss stalls; null = off")
    plateau_patience: int = opt(0, ge=0, help="validations without improvement before lr decay")
    lr_decay: Optional[float] = opt(None, gt=0, lt=1, help="multiply lr by this every epoch after "
                                    "lr_decay_start epochs (Zaremba et al. 2014); null = off")
    lr_decay_start: int = opt(1, ge=0, help="epochs at the initial lr before lr_decay applies")
    adagrad_init: float = opt(0.0, ge=0, new=True, help="AdaGrad: initial sum of squared gradients "
                              "(Socher et al.'s code: 0, reset every epoch)")
    adagrad_eps: float = opt(1e-10, gt=0, new=True, help="AdaGrad: eps added to sqrt(sum) (Socher et al.'s code: 1e-3)")
    tensor_lr: Optional[float] = opt(None, gt=0, new=True, help="cell rntn: the learning rate of the tensor V "
                                     "(a step of V moves a pre-activation ~ sum|c| times more than one of W); "
                                     "null = optim.lr")
    # Socher et al.'s per-matrix L2 (CoreNLP SentimentCostAndGradient: W and V 1e-3, the classifier and the words
    # 1e-4, added to a loss summed over a tree's nodes and averaged over trees: with task.node_loss=mean, the mean
    # over nodes, the same balance takes these divided by the nodes a tree (~37 on SST train))
    decay_words: Optional[float] = opt(None, ge=0, new=True, help="tree cells: L2 (weight decay) of the word vectors, "
                                       "the rows of the batch's words only (CoreNLP), with AdaGrad on one device; "
                                       "null = optim.weight_decay")
    decay_composition: Optional[float] = opt(None, ge=0, new=True, help="tree cells: L2 of the composition (every "
                                             "weight and bias of the cell but the tensor V); null = optim.weight_decay")
    decay_tensor: Optional[float] = opt(None, ge=0, new=True, help="cell rntn: L2 of the tensor V; "
                                        "null = optim.weight_decay")
    decay_classifier: Optional[float] = opt(None, ge=0, new=True, help="tree cells: L2 of the softmax weights (not "
                                            "its bias, as CoreNLP); null = optim.weight_decay")
    adagrad_reset: bool = opt(False, new=True, help="AdaGrad: reset the sums to adagrad_init at the start of every "
                              "epoch (Socher et al.'s code)")

    def check(self, path: str) -> None:
        if self.lr_decay is not None and self.plateau_factor is not None:
            raise ConfigError(f"{path}lr_decay: conflicts with plateau_factor; allowed: one of them")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in ("adagrad_init", "adagrad_eps", "adagrad_reset"):
            if self.name != "adagrad" and getattr(self, key) != defaults[key]:
                raise ConfigError(f"{path}{key}: only for AdaGrad; got name={self.name!r}; allowed: name adagrad")


@dataclass
class TrainerConfig:
    max_steps: int = opt(1000, ge=1, help="optimizer steps")
    max_epochs: Optional[int] = opt(None, ge=1, help="epochs cap for real data sets; null = steps only")
    val_every: Optional[int] = opt(100, ge=1, help="steps between validation+checkpoint; null = every epoch")
    limit_val_batches: Optional[int] = opt(None, ge=1, help="cap validation batches; null = all")
    accelerator: str = opt("auto", choices=("cpu", "gpu", "auto"), hash_as={"auto": "cpu"},
                           help="auto = the GPU when one is visible, else the CPU; the device is no part "
                           "of a run's identity (auto hashes as cpu); result.json records it")
    devices: int = opt(1, ge=1, help="devices for one run (>1 uses DDP)")
    strategy: str = opt("auto", choices=("auto", "ddp", "ddp_spawn"))
    num_nodes: int = opt(1, ge=1)
    precision: str = opt("32-true", choices=("32-true", "16-mixed", "bf16-mixed", "64-true"),
                         help="64-true: float64 throughout (parity tests)")
    deterministic: bool = opt(True, help="torch deterministic algorithms")
    num_workers: int = opt(0, ge=0, help="data loader workers")
    stop_on_divergence: bool = opt(True, help="end the run as 'diverged' on a NaN/inf loss")
    divergence_factor: Optional[float] = opt(EXPLODED, gt=1, new=True,
                                             help="with stop_on_divergence: also end the run as 'diverged' at a "
                                             "validation whose loss (a primary loss metric's val/ twin) is finite "
                                             "but above this multiple of the task's baseline; null = NaN/inf only")
    test_on: str = opt("last", choices=("last", "best"),
                       help="test the last weights, or the checkpoint with the best validation score")
    monitor: Optional[str] = opt(None, none_is_null=True, help="validation metric for test_on=best; null = the val/ "
                                 "counterpart of the task's primary metric")
    stop_when_solved: bool = opt(False, new=True,
                                 help="end the run at the first validation that meets the task's solved "
                                 "criterion (long-dependency tasks; never stops on a plateau)")

    def check(self, path: str) -> None:
        if self.monitor is not None and not self.monitor.startswith("val/"):
            raise ConfigError(f"{path}monitor: invalid value {self.monitor!r}; allowed: a validation "
                              f"metric such as val/loss, val/acc, val/f1, val/ppl, val/bleu")


@dataclass
class RunConfig:
    seed: int = opt(0, ge=0, help="model/training seed (data seeds live in the task section)")
    task: Optional[TaskConfig] = None  # the task family's own dataclass, picked by task.name
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        return config_hash(hash_view(self))


# ---------------------------------------------------------------- loading and merging


def preset(section: str, name: str) -> dict:
    path = CONFIG_DIR / section / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONFIG_DIR / section).glob("*.yaml"))
        raise ConfigError(f"{section}: unknown preset {name!r}; allowed: {', '.join(names)}")
    return load_yaml(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise DuplicateKey(key, key_node.start_mark.line)
                seen.add(key)
        return super().construct_mapping(node, deep)


class DuplicateKey(Exception):
    def __init__(self, key, line: int):
        super().__init__(key, line)
        self.key, self.line = key, line


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except DuplicateKey as e:
        raise ConfigError(f"config file {path} line {e.line + 1}: duplicate key {e.key!r}; allowed: "
                          f"each key once per mapping") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at top level")
    return data


def set_key(tree: dict, key: str, value) -> None:
    """Set a dotted key. A string for a whole section loads that section's preset."""
    parts = key.split(".")
    if len(parts) == 1 and key in SECTIONS:
        tree[key] = preset(key, value) if isinstance(value, str) else copy.deepcopy(value)
        return
    node = tree
    for p in parts[:-1]:
        if p in SECTIONS and isinstance(node.get(p), str):
            node[p] = preset(p, node[p])
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p} is not a section")
    node[parts[-1]] = copy.deepcopy(value)


def merge(tree: dict, update: dict, top: bool = True) -> dict:
    """Deep-merge `update` into `tree`; at top level a section string loads its preset."""
    for k, v in update.items():
        if top and k in SECTIONS and isinstance(v, str):
            tree[k] = preset(k, v)
        elif isinstance(v, dict) and isinstance(tree.get(k), (dict, str)):
            if top and k in SECTIONS and isinstance(tree[k], str):
                tree[k] = preset(k, tree[k])
            merge(tree[k], v, top=False)
        else:
            tree[k] = copy.deepcopy(v)
    return tree


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. model.cell=gru")
        k, v = item.split("=", 1)
        out.append((k.strip(), parse_value(v)))
    return out


def resolve(tree: dict) -> RunConfig:
    """Validate a merged dict into a RunConfig (every field filled)."""
    tree = copy.deepcopy(tree)
    for s in SECTIONS:
        if isinstance(tree.get(s), str):
            tree[s] = preset(s, tree[s])
    task = tree.pop("task", None) or {}
    if not isinstance(task, dict):
        raise ConfigError(f"task: expected a mapping or a preset name, got {task!r}")
    if "name" not in task:
        raise ConfigError(f"task.name: missing; allowed: {', '.join(list(TASKS))}")
    name = task["name"]
    if name not in list(TASKS):
        raise ConfigError(f"task.name: invalid value {name!r}; allowed: {', '.join(list(TASKS))}")
    task_cfg = build(task_class(name).Config, task, "task.")
    model_cfg = build(ModelConfig, tree.pop("model", None) or {}, "model.")
    cfg = build(RunConfig, tree, "")
    if model_cfg.output_feedback != "none" and not task_class(name).step_classes:
        allowed = ", ".join(n for n in TASKS if task_class(n).step_classes)
        raise ConfigError(f"model.output_feedback: task {name!r} has no class target at every step; "
                          f"allowed tasks: {allowed}")
    if cfg.optim.tensor_lr is not None and model_cfg.cell != "rntn":
        raise ConfigError(f"optim.tensor_lr: only for cell 'rntn' (its tensor V); got cell {model_cfg.cell!r}; "
                          f"allowed: null")
    check_decay_groups(cfg.optim, model_cfg, cfg.trainer)
    cfg.task, cfg.model = task_cfg, model_cfg
    return cfg


DECAY_GROUPS = ("words", "composition", "tensor", "classifier")


def check_decay_groups(o: OptimConfig, model_cfg: ModelConfig, t: TrainerConfig) -> None:
    """optim.decay_<group>: only for the tree cells (tensor: rntn); words: row-sparse, so AdaGrad on one device."""
    for group in DECAY_GROUPS:
        key = f"decay_{group}"
        if getattr(o, key) is None:
            continue
        if model_cfg.cell not in TREE_CELLS:
            raise ConfigError(f"optim.{key}: only for the tree cells ({', '.join(TREE_CELLS)}); "
                              f"got cell {model_cfg.cell!r}; allowed: null")
        if group == "tensor" and model_cfg.cell != "rntn":
            raise ConfigError(f"optim.{key}: only for cell 'rntn' (its tensor V); got cell {model_cfg.cell!r}; "
                              f"allowed: null")
        if group == "words" and (o.name != "adagrad" or t.devices != 1 or t.num_nodes != 1):
            raise ConfigError(f"optim.{key}: decays the rows of a batch's words (row-sparse gradients), with AdaGrad "
                              f"on one device; got name={o.name!r}, devices={t.devices}, num_nodes={t.num_nodes}; "
                              f"allowed: null")


def load(path=None, overrides: list[str] | list[tuple] = ()) -> RunConfig:
    """Config file (optional) + overrides -> resolved RunConfig."""
    tree: dict = {}
    if path is not None:
        merge(tree, load_yaml(path))
    pairs = parse_overrides(overrides) if overrides and isinstance(overrides[0], str) else overrides
    for k, v in pairs:
        set_key(tree, k, v)
    return resolve(tree)


def to_overrides(cfg: RunConfig) -> list[str]:
    """The `key=value` list that rebuilds `cfg` from the defaults (for reproduce commands)."""
    base = resolve({"task": {"name": cfg.task.name}}).to_dict()
    out = []

    def walk(a, b, prefix):
        for k, v in a.items():
            if isinstance(v, dict):
                walk(v, b.get(k, {}) if isinstance(b, dict) else {}, f"{prefix}{k}.")
            elif not isinstance(b, dict) or b.get(k, object()) != v or (prefix, k) == ("task.", "name"):
                out.append(f"{prefix}{k}={fmt_value(v)}")
    walk(cfg.to_dict(), base, "")
    return out


def field_lines() -> list[str]:
    """`rnnbench config --fields`: one line per run-config field, generated from the dataclasses."""
    out = describe(RunConfig, skip=("task",))
    for name in TASKS:  # task.name picks the family; its presets are in bench/configs/task/
        out += [f"# task.name={name}"] + describe(task_class(name).Config, "task.")
    return out


def from_resolved(d: dict) -> RunConfig:
    """Rebuild a RunConfig from a saved resolved config (round trip of to_dict)."""
    return resolve(d)


def reproduce_command(cfg: RunConfig) -> str:
    """The `rnnbench train` command line that rebuilds `cfg` (and so its hash)."""
    return "rnnbench train " + " ".join(shlex.quote(o) for o in to_overrides(cfg))
