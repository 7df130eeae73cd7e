"""Data: datasets and the generated sample video."""
