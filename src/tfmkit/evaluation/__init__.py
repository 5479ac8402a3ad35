"""Evaluation: pure metrics over arrays, baselines, and the runners that touch AnnData."""
