"""What the micro-benchmarks share: their argument parser, the cell list, threads and seed,
medians of interleaved repeats, and Markdown tables."""
from __future__ import annotations

import argparse
import statistics
from typing import Iterable, Optional

import torch

from models.registry import CELLS


def parser(name: str, doc: Optional[str]) -> argparse.ArgumentParser:
    """The parser of `python -m bench.benchmarks.<name>`, its module docstring as the help."""
    return argparse.ArgumentParser(prog=f"python -m bench.benchmarks.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_threads_and_seed(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)


def setup(threads: Optional[int], seed: Optional[int] = None) -> None:
    """Torch threads (when given) and the seed of the benchmark's random inputs."""
    if threads:
        torch.set_num_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)


def cell_list(text: str) -> list[str]:
    """Comma-separated registry cells; an unknown one exits with the allowed names."""
    cells = [c.strip() for c in text.split(",") if c.strip()]
    for c in cells:
        if c not in CELLS:
            raise SystemExit(f"--cells: unknown cell {c!r}; allowed: {', '.join(CELLS)}")
    return cells


def median_ms(seconds: Iterable[float]) -> float:
    return statistics.median(seconds) * 1e3


def spread(seconds: list[float]) -> float:
    """(max - min) / median of repeated timings."""
    return (max(seconds) - min(seconds)) / statistics.median(seconds)


def table(header: list[str], rows: Iterable[list], align: Optional[list[str]] = None) -> str:
    """A Markdown table; `align` per column: '---', '---:' or ':---:' (default left)."""
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
