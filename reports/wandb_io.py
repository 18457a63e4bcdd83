"""W&B side of reports: read runs from the W&B API (`--from-wandb`) and publish a W&B Report
(`--publish`, needs the `wandb-workspaces` package). Both need W&B online (an API key); offline,
they fail with one line (ConfigError) before touching the network. Nothing here is imported
unless asked: the default report is built from the local store only.

Runs logged by bench.train use the config hash as W&B run id and the sweep name as group, so
a W&B run maps back to a store run one to one (a run in both is taken from the store).
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

from bench.config import reproduce_command, resolve
from bench.schema import ConfigError
from bench.tracking import default_mode
from reports.collect import Run
from tasks.registry import task_class
from tasks.text import local_root


def _online(flag: str) -> None:
    mode = default_mode()
    if mode == "online":
        return
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        why = f"WANDB_MODE={os.environ['WANDB_MODE']}"
    else:
        why = "no API key configured (set WANDB_API_KEY or run `wandb login`)"
    raise ConfigError(f"{flag}: W&B is not online here: {why}")


def _split_path(path: str, flag: str) -> tuple[Optional[str], str]:
    parts = [p for p in (path or "").split("/") if p]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) != 2:
        raise ConfigError(f"{flag} {path!r}: expected ENTITY/PROJECT (or PROJECT)")
    return parts[0], parts[1]


# ---------------------------------------------------------------- reading


def fetch_runs(path: str, sweeps: list[str], known: set[str] = frozenset()) -> list[Run]:
    """Runs of `ENTITY/PROJECT` whose group is one of `sweeps` (all runs when none), skipping
    ids already in `known` (taken from the local store)."""
    _online("--from-wandb")
    entity, project = _split_path(path, "--from-wandb")
    try:
        import wandb  # optional at report time: only --from-wandb and --publish talk to W&B

        api = wandb.Api(timeout=30)
        full = f"{entity or api.default_entity}/{project}"
        filters = {"group": {"$in": list(sweeps)}} if sweeps else {}
        remote = list(api.runs(full, filters=filters))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--from-wandb {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return [_to_run(r) for r in remote if r.id not in known]


# task section (JSON) -> primary, mode and baseline: one data load per task, not one per run
_TASKS: dict[str, dict] = {}


def task_fields(cfg) -> dict:
    """What bench.train records from the task in result.json: primary, mode and baseline (the
    trivial predictor's scores: no model needed). A data task reads its local data for the
    baseline; a hub dataset is not downloaded for a report, and where the data cannot be read the
    baseline is left absent (one warning line), as for runs stored before the field."""
    key = json.dumps(cfg.to_dict()["task"], sort_keys=True, default=str)
    if key not in _TASKS:
        task = task_class(cfg.task.name)(cfg)
        out = {"primary": task.primary, "mode": task.mode}
        if getattr(cfg.task, "dataset", None) and local_root(cfg.task) is None:
            print(f"reports: task {cfg.task.name}: its data is on the hub only; no baseline for its W&B runs")
        else:
            try:
                out["baseline"] = task.baseline()
            except (OSError, ValueError, ImportError) as e:   # ConfigError is a ValueError
                print(f"reports: task {cfg.task.name}: no baseline for its W&B runs ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})")
        _TASKS[key] = out
    return _TASKS[key]


def _to_run(r) -> Run:
    # `config`: Lightning's copy of the whole config the run trained (the task module's
    # hyperparameters); without it (a run logged by other code) the top level, less W&B's keys.
    # Under `wandb agent` the top level holds the sweep's locked parameters (a preset name and
    # dotted keys), not a resolvable config.
    raw = dict(r.config)
    config = raw["config"] if isinstance(raw.get("config"), dict) else \
        {k: v for k, v in raw.items() if not k.startswith("_") and k != "config"}
    summary = dict(r.summary)
    metrics = {k: float(v) for k, v in summary.items()
               if k.startswith(("test/", "val/")) and isinstance(v, (int, float))}
    try:
        cfg = resolve(config)
        command = reproduce_command(cfg)
    except Exception:  # a config this code no longer accepts: no reproduce command
        cfg = command = None
    state = getattr(r, "state", "")
    if state == "finished":
        status = "done" if all(math.isfinite(v) for v in metrics.values()) else "diverged"
    elif state == "running":
        status = "running"
    else:
        status = "failed"
    result = {"hash": r.id, "status": status, "metrics": metrics,
              "step": summary.get("trainer/global_step", getattr(r, "lastHistoryStep", None)),
              "wall_time_s": summary.get("_runtime"), "git_commit": (getattr(r, "commit", None) or None),
              "command": command, "wandb_id": r.id, "error": None if status != "failed" else f"W&B state {state}",
              "params": summary.get("params")}
    if status == "running":
        result = None
    elif cfg is not None:
        try:
            result.update(task_fields(cfg))
        except Exception as e:   # a task this code cannot build: the run is kept, without the fields
            print(f"reports: W&B run {r.id}: no primary / mode / baseline ({type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''})")

    def rows(r=r):
        out = []
        for row in r.scan_history(keys=["trainer/global_step", "val/loss"]):
            out.append({"step": row.get("trainer/global_step"), "val/loss": row.get("val/loss")})
        return out

    return Run(r.id, config, result, status, "wandb", rows=rows)


# ---------------------------------------------------------------- publishing


def check_publish() -> None:
    """Fail early (one line) when publishing cannot work: package missing or W&B offline."""
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        raise ConfigError("--publish: needs the wandb-workspaces package (pip install -e '.[reports]')") from None
    _online("--publish")


def report_object(entity: str, project: str, title: str, sections: list[tuple[str, str, list[str], str]],
                  description: str = ""):
    """The W&B Report as wandb-workspaces objects, built without network: a table of contents, then
    per section (heading, markdown, W&B run ids, primary metric) a heading, its Markdown and a panel
    grid over a run set of those runs (val/loss curves, a bar of the primary metric)."""
    import wandb_workspaces.reports.v2 as wr  # optional: the `reports` extra

    blocks = [wr.TableOfContents()]
    for heading, markdown, ids, primary in sections:
        blocks.append(wr.H1(heading))
        blocks.append(wr.MarkdownBlock(text=markdown))
        if ids:
            quoted = ", ".join(f"'{i}'" for i in ids)
            runset = wr.Runset(entity=entity, project=project, name=heading,
                               filters=f"Metric('ID') in [{quoted}]")
            blocks.append(wr.PanelGrid(runsets=[runset], panels=[
                wr.LinePlot(x="trainer/global_step", y=["val/loss"]),
                wr.BarPlot(metrics=[primary]),
            ]))
    return wr.Report(entity=entity, project=project, title=title, description=description, blocks=blocks)


def publish(path: Optional[str], title: str, sections: list[tuple[str, str, list[str], str]],
            description: str = "") -> str:
    """Save a W&B Report (`report_object`); sections are (heading, markdown, run ids, primary
    metric). Returns the report URL."""
    check_publish()
    entity, project = _split_path(path or "rnnbench", "--publish")
    try:
        if entity is None:
            import wandb  # optional at report time, as above

            entity = wandb.Api().default_entity
        report = report_object(entity, project, title, sections, description)
        report.save()
        return report.url
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--publish: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
