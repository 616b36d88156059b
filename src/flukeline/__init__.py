"""Flukeline: identify individual animals from photographs."""

__version__ = "0.1.0"
