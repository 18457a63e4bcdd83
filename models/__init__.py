"""Recurrent architectures: cells (one per file), the layer stack, initialisers."""
