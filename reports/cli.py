"""Subcommands of `rnnbench` that read the result store: report, leaderboard, gradflow."""


def add_parsers(sub) -> None:
    """Register the reporting subcommands (each sets `func`)."""
