"""rnnbench: configs, single runs, sweeps, benchmarks and the command line."""
__version__ = "0.1.0"
