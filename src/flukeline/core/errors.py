"""User-facing errors: the CLI prints their message without a traceback and exits 1."""

from __future__ import annotations


class InputError(Exception):
    """Bad input data or configuration; the message names the file/row/key and the problem."""


class UnreadableImageError(InputError):
    """An image file that cannot be fully decoded; `reason` is the problem without the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
