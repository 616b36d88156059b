"""Flukeline: identify individual animals from photographs."""

import logging

__version__ = "0.1.0"

# FAISS's loader logs every instruction set it tries at INFO when it is imported ("Could not load
# library with AVX512 support due to: ModuleNotFoundError ..."): seven lines that read like errors
# in every console and log. Every module that imports faiss is imported through this package, so
# this one line quiets them all; the loader's warnings and errors still pass.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
