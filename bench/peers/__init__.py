"""Benchmark peers: other identification tools run on our photos and splits, each in its own
environment so that its pins never touch ours (see hotspotter.py)."""
