"""Data: the generated sample video and atomic file writes."""
