"""Weights & Biases tracking: offline unless a key is configured, and never fatal to a run."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Optional

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger("rnnbench")
MODES = ("online", "offline", "disabled")


def quiet_logs() -> None:
    """Keep run logs readable: drop third-party chatter that says nothing about the run."""
    for msg in (".*LeafSpec.*", ".*`srun` command is available.*", ".*does not have many workers.*",
                ".*The number of training batches.*", ".*anonymous setting.*", ".*Checkpoint directory.*exists.*",
                ".*Experiment logs directory.*",
                ".*overridden `transfer_batch_to_device` in `LightningModule` but have passed in a.*"):
        warnings.filterwarnings("ignore", message=msg)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.rank_zero").setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")


def own_service(env: dict) -> dict:
    """`env` for a child process that starts its own W&B service. wandb puts the parent's service in
    WANDB_SERVICE; a child that shares it and is killed leaves its run open there, and resuming that
    run through the same service then fails with "run ID ... is in use"."""
    return {k: v for k, v in env.items() if k != "WANDB_SERVICE"}


def default_mode() -> str:
    """WANDB_MODE if set; online only when an API key is configured; else offline."""
    env = os.environ.get("WANDB_MODE")
    if env in MODES or env == "dryrun":
        return "offline" if env == "dryrun" else env
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def agent_run() -> Optional[tuple[str, str]]:
    """(run id, sweep id) the `wandb agent` gave this process (it sets WANDB_RUN_ID and
    WANDB_SWEEP_ID before it starts the sweep's command); None outside an agent."""
    run_id, sweep_id = os.environ.get("WANDB_RUN_ID"), os.environ.get("WANDB_SWEEP_ID")
    return (run_id, sweep_id) if run_id and sweep_id else None


def wandb_logger(run_dir: Path, run_id: str, config: dict, *, mode: Optional[str], project: str,
                 group: Optional[str], name: str, tags: list[str]):
    """A Lightning WandbLogger resuming run `run_id` (the config hash), or None if W&B is disabled or
    fails. Under `wandb agent` the run is the agent's (its run id, its sweep, its project)."""
    mode = mode or default_mode()
    if mode == "disabled":
        return None
    agent = agent_run()
    if agent is not None:
        run_id = agent[0]
        project = os.environ.get("WANDB_PROJECT") or project
    try:
        logger = _SafeWandbLogger(project=project, group=group, name=name, tags=tags, id=run_id,
                             resume="allow", save_dir=str(run_dir), mode=mode, config=config,
                             job_type="train")
        logger.experiment  # start it now so a failure is caught here, not mid-training
        return logger
    except Exception as e:  # tracking must never fail a run; the CSV log is always kept
        log.warning("W&B tracking off for this run: %s", str(e).splitlines()[0] if str(e) else e)
        return None


def _safe(method):
    def call(self, *args, **kwargs):
        if self._broken:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # e.g. the wandb-core service killed by a SLURM signal
            self._broken = True
            log.warning("W&B logging stopped for this run (the CSV log goes on): %s", e)
    return call


def _safe_logger_class():
    class SafeWandbLogger(WandbLogger):
        """A WandbLogger whose failures are warnings: tracking never fails a run."""
        _broken = False
        log_metrics = _safe(WandbLogger.log_metrics)
        log_hyperparams = _safe(WandbLogger.log_hyperparams)
        finalize = _safe(WandbLogger.finalize)
        after_save_checkpoint = _safe(WandbLogger.after_save_checkpoint)

    return SafeWandbLogger


def _SafeWandbLogger(**kwargs):
    return _safe_logger_class()(**kwargs)


def finish(logger) -> None:
    if logger is None:
        return
    try:
        import wandb  # optional at run time: W&B may be disabled or missing; imported only when used

        wandb.finish()
    except Exception as e:
        log.warning("W&B finish failed: %s", e)
