"""Gradient-flow diagnostic: ‖∂l_T/∂h_t‖ against the lag T − t, at init and after training.

The network runs one step at a time (T = 1 chunks) with its state carried from step to step;
each step's hidden state h_t (the whole `h` state tensor: every layer) keeps its gradient, and
one backward pass from the loss at the last step l_T gives ∂l_T/∂h_t for every t. The value
reported per lag is the L2 norm over layers and units, averaged over the batch (the loss is
summed over the batch, so a norm is one example's gradient).

* With a task config (a synthetic task with a batch generator, e.g. copy/adding), inputs come
  from the task and l_T is the task's own loss at the last step through the task module's
  head (at init, or with a trained run's weights).
* With an input size, inputs are N(0, 1) and l_T = u·h_T with a fixed random unit vector u.

Vanishing gradients show as curves falling by orders of magnitude with the lag (log scale),
exploding ones as curves growing with it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from bench.config import parse_overrides, preset, resolve
from bench.schema import ConfigError, build
from models.config import ModelConfig
from models.recurrent import Recurrent
from reports.collect import as_store
from bench.store import write_atomic
from reports.plots import plt, save  # matplotlib with the Agg backend set
from tasks.registry import task_class


def _model_cfg(model_cfg):
    if isinstance(model_cfg, str):
        model_cfg = {"cell": model_cfg}
    if isinstance(model_cfg, dict):
        return build(ModelConfig, model_cfg, "model.")
    return model_cfg


def _as_dict(cfg) -> dict:
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def _top_output(rnn, state: tuple) -> torch.Tensor:
    """The network's output at the last step, from its state: top layer's h, or the sum of every
    layer's h with residual connections (out_l = h_l + out_{l-1}, out_0 = h_0)."""
    h = state[0]
    return h.sum(0) if getattr(rnn, "residual", False) else h[-1]


def _step_through(rnn, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run x (B, L, I) one step at a time; returns the retained h_t of every step, the output
    read from the last state, and the network's own output at the last step (a check)."""
    state, hs, out = None, [], None
    for t in range(x.shape[1]):
        out, state = rnn(x[:, t:t + 1], state=state)
        state = tuple(state)
        state[0].retain_grad()
        hs.append(state[0])
    return hs, _top_output(rnn, state), out[:, -1]


def measure(model_cfg, task: Union[int, dict, object, None] = None, T: Optional[int] = None, *,
            batch: int = 16, seed: int = 0, state_dict: Optional[dict] = None,
            dtype: torch.dtype = torch.float64) -> dict:
    """‖∂l_T/∂h_t‖ for every lag. `task`: an input size (int) or a task config (dataclass or dict
    with `name`); `T`: sequence length (input size) or the task's `T` (default: the config's).
    `state_dict`: trained weights (of the task module for a task, of `Recurrent` for an input size).
    Computed in float64 by default, so gradients far below float32's range stay measurable.
    Returns {"lags": [0..L-1], "norm": [...], "length": L, "loss": l_T, "cell": .., ...}."""
    cfg = _model_cfg(model_cfg)
    if cfg.bidirectional:
        raise ConfigError("gradflow: model.bidirectional is not supported (the backward direction is not causal)")
    if cfg.output_feedback != "none":   # the task module has no plain stack to step through (models/feedback.py)
        raise ConfigError(f"gradflow: model.output_feedback={cfg.output_feedback!r} is not supported (each step "
                          "also reads the previous output); allowed: none")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(10_000 + seed)
    if isinstance(task, int) or task is None:
        if T is None:
            raise ConfigError("gradflow: T is needed with an input size")
        input_size = int(task or 1)
        rnn = Recurrent(input_size, cfg)
        if state_dict is not None:
            rnn.load_state_dict(state_dict)
        rnn.eval().to(dtype)
        x = torch.randn(batch, T, input_size, generator=g).to(dtype)
        u = torch.randn(rnn.output_size, generator=g).to(dtype)
        u = u / u.norm()
        hs, top, out_T = _step_through(rnn, x)
        loss = (top @ u).sum()
        where = f"input_size={input_size}"
    else:
        tdict = _as_dict(task)
        if T is not None:
            if "T" not in tdict and "name" in tdict and "T" not in asdict(resolve({"task": {"name": tdict["name"]}}).task):
                raise ConfigError(f"gradflow: task {tdict.get('name')!r} has no T; pass an input size instead")
            tdict["T"] = T
        run_cfg = resolve({"seed": seed, "task": tdict, "model": asdict(cfg)})
        t = task_class(run_cfg.task.name)(run_cfg)
        if not hasattr(t, "make") or not hasattr(t, "loss_and_metrics"):
            raise ConfigError(f"gradflow: task {run_cfg.task.name!r} has no synthetic batch generator; "
                              "pass an input size instead")
        torch.manual_seed(seed)
        module = t.module(None)
        if state_dict is not None:
            module.load_state_dict(state_dict)
        module.eval().to(dtype)
        rnn = module.rnn
        x, y = t.make(batch, g)
        if getattr(t, "one_hot", False):
            x = torch.nn.functional.one_hot(x, t.input_size)
        if y.is_floating_point():
            y = y.to(dtype)
        hs, top, out_T = _step_through(rnn, x.to(dtype))
        logits = module.head(top)[:, None]                       # (B, 1, out): the last step only
        y_last = y[:, -1:] if y.dim() == 2 else y
        loss = t.loss_and_metrics(logits, y_last)[0] * batch      # task loss, summed over the batch
        where = " ".join(f"{k}={v}" for k, v in asdict(run_cfg.task).items() if k in ("name", "T"))
    if not torch.allclose(top, out_T, atol=1e-5, rtol=1e-4):
        raise RuntimeError("gradflow: the output read from the state differs from the network's output")
    loss.backward()
    L = len(hs)
    norms = []
    for t_ in range(L):
        grad = hs[t_].grad
        if grad is None:
            norms.append(0.0)
            continue
        per_example = grad.detach().permute(1, 0, 2).reshape(grad.shape[1], -1).norm(dim=1)
        norms.append(float(per_example.mean()))
    lags = list(range(L))
    return {"cell": cfg.cell, "where": where, "length": L, "loss": float(loss.detach()) / batch,
            "lags": lags, "norm": [norms[L - 1 - k] for k in lags], "batch": batch, "seed": seed}


def measure_run(store, h: str, T: Optional[int] = None, *, batch: int = 16, seed: Optional[int] = None) -> dict:
    """A run of the store, at init (fresh weights from its config and seed) and trained (its
    last checkpoint): {"init": measure(..), "trained": measure(..) or None, "config": ..}."""
    store = as_store(store)
    if not (store.run_dir(h) / "config.yaml").is_file():
        raise FileNotFoundError(f"run {h}: not in store {store.root}")
    cfg = store.config(h)
    seed = cfg.get("seed", 0) if seed is None else seed
    init = measure(cfg["model"], cfg["task"], T, batch=batch, seed=seed)
    ckpt = store.checkpoint(h)
    trained = None
    if ckpt is not None:
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        trained = measure(cfg["model"], cfg["task"], T, batch=batch, seed=seed, state_dict=sd)
    return {"hash": h, "init": init, "trained": trained, "config": cfg,
            "status": store.status(h)}


def plot(init: dict[str, dict], trained: dict[str, dict], path: Path, title: str = "") -> Path:
    """Side by side, log scale: at init | after training (the second panel only with runs)."""
    panels = [("at initialization", init)] + ([("after training", trained)] if trained else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (name, curves) in zip(axes[0], panels):
        for label, m in curves.items():
            pts = [(k, v) for k, v in zip(m["lags"], m["norm"]) if v > 0 and math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts), label=label, lw=1.4)
        ax.set_yscale("log")
        ax.set_xlabel("lag T − t (steps)")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("‖∂l_T / ∂h_t‖ (mean over batch)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path, dpi=110, metadata={"Software": None})   # no matplotlib version: same bytes across versions
    plt.close(fig)
    return path


def run_diagnostic(out_dir, cells: list[str] = (), task: Optional[str] = None, input_size: Optional[int] = None,
                   T: Optional[int] = None, model_overrides: list[str] = (), task_overrides: list[str] = (),
                   runs: list[str] = (), store="results", batch: int = 16, seed: int = 0) -> dict[str, Path]:
    """What `rnnbench gradflow` does: measure, then write gradflow.png / .json / .csv in out_dir."""
    init: dict[str, dict] = {}
    trained: dict[str, dict] = {}
    model_extra = dict(parse_overrides(list(model_overrides)))
    model_extra = {k[len("model."):] if k.startswith("model.") else k: v for k, v in model_extra.items()}
    if input_size is not None and task is not None:
        raise ConfigError("gradflow: give either --task or --input-size, not both")
    if input_size is None:
        tcfg = preset("task", task or "copy")
        for k, v in parse_overrides(list(task_overrides)):
            tcfg[k[len("task."):] if k.startswith("task.") else k] = v
        source = tcfg
    else:
        if T is None:
            raise ConfigError("gradflow: --T is needed with --input-size")
        source = int(input_size)
    for cell in cells or ([] if runs else ["rnn_tanh", "lstm", "gru"]):
        m = measure({"cell": cell, **model_extra}, source, T, batch=batch, seed=seed)
        init[cell + " " + " ".join(f"{k}={v}" for k, v in model_extra.items())] = m
    for h in runs:
        r = measure_run(store, h, T, batch=batch)
        label = f"{r['config']['model']['cell']} run {h[:8]}"
        init.setdefault(label, r["init"])
        if r["trained"] is None:
            raise FileNotFoundError(f"run {h}: no checkpoint in store {store} (status {r['status']})")
        trained[label] = r["trained"]
    init = {k.strip(): v for k, v in init.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    any_m = next(iter(init.values()))
    title = f"gradient flow, {any_m['where']}, sequence length {any_m['length']}, batch {batch}"
    paths = {"png": plot(init, trained, out / "gradflow.png", title)}
    rows = [{"label": k, "phase": phase, **m} for phase, curves in (("init", init), ("trained", trained))
            for k, m in curves.items()]
    paths["json"] = out / "gradflow.json"
    write_atomic(paths["json"], json.dumps(rows, indent=1) + "\n")
    paths["csv"] = out / "gradflow.csv"
    write_atomic(paths["csv"], "label,phase,lag,norm\n" + "".join(
        f"\"{r['label']}\",{r['phase']},{k},{v!r}\n" for r in rows for k, v in zip(r["lags"], r["norm"])))
    return paths
