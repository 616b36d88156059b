"""FAISS's loader chatter stays out of our logs (flukeline/__init__.py), and nothing else does."""

import subprocess
import sys

# A fresh interpreter: this one may have imported faiss already. Logging at DEBUG, as verbose as a
# user could make it; the loader's own warning must still come through.
SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
import flukeline.core.retrieval
assert "faiss" in sys.modules
logging.getLogger("faiss.loader").warning("a real loader warning")
logging.getLogger("flukeline").info("our own info line")
"""


def test_importing_our_faiss_module_logs_no_loader_chatter():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    lines = result.stderr.splitlines()
    assert [line for line in lines if "faiss" in line] == ["WARNING faiss.loader: a real loader warning"]
    assert "INFO flukeline: our own info line" in lines
    assert not any("AVX" in line or "Could not load library" in line for line in lines)
