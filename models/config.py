"""The `model` section of a run config."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from bench.schema import ConfigError, opt
from models.feedback import FEEDBACK, SCHEDULES
from models.registry import CELLS, FEEDBACK_ONLY, TREE_CELLS, cell_class

# LSTM-family switches (Greff et al. 2015); a cell lists the ones it supports in `switches`.
SWITCHES = ("forget_bias", "peepholes", "input_gate", "forget_gate", "output_gate",
            "input_activation", "output_activation", "coupled", "gate_recurrence",
            "reset_after", "leak", "leak_learned", "transition_layers")

# size bounds: far beyond any published recurrent net, low enough to refuse a typo at once
# (a too-large model within them is refused by bench.train.check_host's memory estimate)
MAX_WIDTH, MAX_LAYERS = 2 ** 16, 1000


@dataclass
class ModelConfig:
    cell: str = opt("lstm", choices=lambda: list(CELLS) + list(TREE_CELLS),
                    help="cell from models/registry.py (tree cells: task.name=treebank only)")
    hidden_size: int = opt(128, ge=1, le=MAX_WIDTH)
    num_layers: int = opt(1, ge=1, le=MAX_LAYERS)
    bidirectional: bool = opt(False)
    residual: bool = opt(False, help="add each layer's input to its output (layers >= 2)")
    dropout: float = opt(0.0, ge=0, lt=1, help="dropout between layers and before the head")
    embedding_size: int = opt(64, ge=1, le=MAX_WIDTH, help="token embedding size (token inputs only)")
    recurrent_init: str = opt("default", choices=("default", "orthogonal", "identity"),
                              help="hidden-to-hidden init, applied per gate block")
    input_init: str = opt("default", choices=("default", "xavier_uniform", "orthogonal"),
                          help="input-to-hidden init, applied per gate block")
    forget_bias: Optional[float] = opt(None, help="LSTM forget-gate bias init; null = framework default")
    peepholes: bool = opt(False, help="LSTM diagonal peepholes (i,f from c_{t-1}; o from c_t)")
    input_gate: bool = opt(True, help="LSTM input gate (False = NIG)")
    forget_gate: bool = opt(True, help="LSTM forget gate (False = NFG)")
    output_gate: bool = opt(True, help="LSTM output gate (False = NOG)")
    input_activation: bool = opt(True, help="LSTM tanh on the block input (False = NIAF)")
    output_activation: bool = opt(True, help="LSTM tanh on the cell state (False = NOAF)")
    coupled: bool = opt(False, help="LSTM coupled input-forget gate f = 1 - i (CIFG)")
    gate_recurrence: bool = opt(False, help="LSTM full gate recurrence (FGR)")
    reset_after: bool = opt(True, new=True, help="GRU: reset gate after the recurrent matmul, r * (U h + b) "
                            "(torch/cuDNN); false = before it, U (r * h) (Cho et al. 2014; custom path)")
    leak: float = opt(0.5, gt=0, lt=1, new=True, help="leaky cell: alpha of h = alpha h + (1 - alpha) tanh(..) "
                      "(the initial value when leak_learned)")
    leak_learned: bool = opt(False, new=True, help="leaky cell: learn alpha per unit (sigmoid of a parameter)")
    transition_layers: int = opt(1, ge=1, new=True, help="deep_transition cell: tanh layers from h_{t-1} to h_t")
    output_feedback: str = opt("none", choices=FEEDBACK, new=True, help="feed the previous output back as an "
                               "input (models/feedback.py): prediction = the model's own, teacher = the "
                               "target, scheduled = scheduled sampling; evaluation always free-running")
    feedback_ratio: float = opt(1.0, ge=0, le=1, new=True, help="output_feedback scheduled: r, the probability "
                                "of feeding the target (the start of a decaying schedule)")
    feedback_schedule: str = opt("inverse_sigmoid", choices=SCHEDULES, new=True,
                                 help="output_feedback scheduled: eps_i = r (constant), r max(0, 1 - i/k) "
                                 "(linear), r k / (k + exp(i/k)) (inverse_sigmoid) at training step i")
    feedback_k: float = opt(100.0, gt=0, new=True, help="output_feedback scheduled: k of the schedule")
    init_range: Optional[float] = opt(None, gt=0, help="every weight of the whole network (embeddings and "
                                      "head too) U(-r, r), as Zaremba et al. 2014; null = per-layer defaults")
    tree_init: str = opt("default", choices=("default", "socher"), new=True,
                         help="recnn, rntn: socher = Socher et al.'s code (CoreNLP SentimentModel): W = [I I] + "
                              "U(+-1/(2 sqrt d)), bias 0; V U(+-1/(4d)); words N(0, 0.1^2); softmax bias U(0, 1)")
    impl: str = opt("auto", choices=("auto", "fused", "custom"),
                    help="auto = fused torch.nn kernels when the variant allows it")

    @classmethod
    def prepare(cls, data: dict, path: str) -> dict:
        """Fill in the switches a named variant fixes (e.g. lstm_nig -> input_gate: false)."""
        spec = CELLS.get(data.get("cell", "lstm"))
        for key, value in (spec.fixed.items() if spec else ()):
            if key in data and data[key] != value:
                raise ConfigError(f"{path}{key}: cell {data['cell']!r} fixes it to {value!r}; "
                                  f"drop the key or use cell {spec.base!r}")
            data[key] = value
        return data

    def check(self, path: str) -> None:
        cls = cell_class(self.cell)
        if self.cell in TREE_CELLS and cls.check_config(self, path):
            raise ConfigError(cls.check_config(self, path))
        defaults = {f.name: f.default for f in fields(self)}
        for key in SWITCHES:
            if getattr(self, key) != defaults[key] and key not in cls.switches:
                allowed = ", ".join(n for n in CELLS if key in cell_class(n).switches)
                raise ConfigError(f"{path}{key}: not available for cell {self.cell!r}; allowed cells: {allowed}")
        self.check_feedback(path, defaults)
        if self.residual and self.num_layers < 2:
            raise ConfigError(f"{path}residual: needs num_layers >= 2; got num_layers={self.num_layers}")
        if self.coupled and not self.input_gate:
            raise ConfigError(f"{path}coupled: needs input_gate true (f = 1 - i)")
        if self.coupled and not self.forget_gate:
            raise ConfigError(f"{path}coupled: conflicts with forget_gate false; allowed: one of them")
        if self.forget_bias is not None and (not self.forget_gate or self.coupled):
            raise ConfigError(f"{path}forget_bias: needs a forget gate of its own; "
                              f"got forget_gate={self.forget_gate}, coupled={self.coupled}")
        if self.tree_init != "default" and self.cell not in ("recnn", "rntn"):
            raise ConfigError(f"{path}tree_init: {self.tree_init!r} is for cells recnn, rntn; got cell "
                              f"{self.cell!r}; allowed: default")
        if self.init_range is not None:
            for key in ("recurrent_init", "input_init", "forget_bias", "tree_init"):
                if getattr(self, key) != defaults[key]:
                    raise ConfigError(f"{path}init_range: overrides {key}={getattr(self, key)!r}; allowed: one of them")
        if self.impl == "fused" and not cls.fusable(self):
            raise ConfigError(f"{path}impl: 'fused' not possible for this variant; allowed: auto, custom")

    def check_feedback(self, path: str, defaults: dict) -> None:
        if self.cell in FEEDBACK_ONLY and self.output_feedback == "none":
            raise ConfigError(f"{path}output_feedback: cell {self.cell!r} needs it (its only recurrence is "
                              f"the previous output); allowed: prediction, teacher, scheduled")
        if self.output_feedback != "none" and self.bidirectional:
            raise ConfigError(f"{path}bidirectional: output feedback runs left to right; allowed: false")
        for key in ("feedback_ratio", "feedback_schedule", "feedback_k"):
            if getattr(self, key) != defaults[key] and self.output_feedback != "scheduled":
                raise ConfigError(f"{path}{key}: only for output_feedback 'scheduled'; "
                                  f"got output_feedback={self.output_feedback!r}")
