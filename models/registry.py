"""The one registry of recurrent cells. A new cell: one file in models/cells + one entry here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CellSpec:
    path: str                                   # "module:Class"
    fixed: dict = field(default_factory=dict)   # switches this named variant fixes
    base: str = ""                              # the plain cell it is a variant of


_LSTM = "models.cells.lstm:LSTMCell"


def _greff(**fixed) -> CellSpec:
    """Greff et al. (2015) variants are defined relative to their vanilla LSTM (with peepholes)."""
    return CellSpec(_LSTM, {"peepholes": True, **fixed}, "lstm")


CELLS: dict[str, CellSpec] = {
    "rnn_tanh": CellSpec("models.cells.rnn:TanhRNNCell"),
    "rnn_relu": CellSpec("models.cells.rnn:ReLURNNCell"),
    "irnn": CellSpec("models.cells.rnn:ReLURNNCell", {"recurrent_init": "identity"}, "rnn_relu"),
    "lstm": CellSpec(_LSTM),
    "gru": CellSpec("models.cells.gru:GRUCell"),
    "leaky": CellSpec("models.cells.leaky:LeakyRNNCell"),
    "deep_transition": CellSpec("models.cells.deep_transition:DeepTransitionCell"),
    "jordan": CellSpec("models.cells.jordan:JordanCell"),   # needs model.output_feedback
    "lstm_vanilla": _greff(),
    "lstm_nig": _greff(input_gate=False),
    "lstm_nfg": _greff(forget_gate=False),
    "lstm_nog": _greff(output_gate=False),
    "lstm_niaf": _greff(input_activation=False),
    "lstm_noaf": _greff(output_activation=False),
    "lstm_np": CellSpec(_LSTM, {"peepholes": False}, "lstm"),
    "lstm_cifg": _greff(coupled=True),
    "lstm_fgr": _greff(gate_recurrence=True),
    # The LSTM built up gate by gate (Solberg slides), see LSTMCell: residual recurrence
    # s^t = s^{t-1} + z^t; + input gate; + forget gate; + output gate (= lstm).
    "ladder_residual": CellSpec(_LSTM, {"input_gate": False, "forget_gate": False, "output_gate": False}, "lstm"),
    "ladder_input": CellSpec(_LSTM, {"forget_gate": False, "output_gate": False}, "lstm"),
    "ladder_forget": CellSpec(_LSTM, {"output_gate": False}, "lstm"),
    "ladder_output": CellSpec(_LSTM, {"input_gate": True, "forget_gate": True, "output_gate": True}, "lstm"),
}


# Cells whose only recurrence is the fed-back output (models/feedback.py): no hidden-to-hidden
# weight, so never a plain Recurrent stack (model.output_feedback is required).
FEEDBACK_ONLY = ("jordan",)


# Tree-structured models (models/tree/): a model.cell for the treebank family (tasks/treebank.py).
TREE_CELLS: dict[str, CellSpec] = {
    "recnn": CellSpec("models.tree.recnn:RecNN"),
    "rntn": CellSpec("models.tree.rntn:RNTN"),
    "treelstm_childsum": CellSpec("models.tree.treelstm:ChildSumTreeLSTM"),
    "treelstm_nary": CellSpec("models.tree.treelstm:NaryTreeLSTM"),
}


def cell_class(name: str):
    module, cls = (CELLS.get(name) or TREE_CELLS[name]).path.split(":")
    return getattr(importlib.import_module(module), cls)
