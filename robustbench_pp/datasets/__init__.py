"""Datasets: clean sources, released corrupted sets, generation and on-the-fly corruption."""
