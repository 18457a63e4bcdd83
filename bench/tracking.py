"""Weights & Biases tracking: offline unless a key is configured, and never fatal to a run."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

log = logging.getLogger("rnnbench")
MODES = ("online", "offline", "disabled")


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


def wandb_logger(run_dir: Path, run_id: str, config: dict, *, mode: Optional[str], project: str,
                 group: Optional[str], name: str, tags: list[str]):
    """A Lightning WandbLogger resuming run `run_id`, or None if W&B is disabled or fails."""
    mode = mode or default_mode()
    if mode == "disabled":
        return None
    try:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(project=project, group=group, name=name, tags=tags, id=run_id,
                             resume="allow", save_dir=str(run_dir), mode=mode, config=config,
                             job_type="train")
        logger.experiment  # start it now so a failure is caught here, not mid-training
        return logger
    except Exception as e:  # tracking must never fail a run; the CSV log is always kept
        log.warning("W&B tracking off for this run: %s", str(e).splitlines()[0] if str(e) else e)
        return None


def finish(logger) -> None:
    if logger is None:
        return
    try:
        import wandb

        wandb.finish()
    except Exception as e:
        log.warning("W&B finish failed: %s", e)
