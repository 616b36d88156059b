"""The HotSpotter peer's own virtual environment: bench/.peers/hotspotter (git-ignored).

ibeis (Wildbook's HotSpotter) pins its own numpy, opencv, PyQt5 and ~90 other packages; none of
them may touch our venv, so the peer lives in a separate venv made from
hotspotter-requirements.txt and is only ever run as a subprocess (bench/peers/hotspotter.py).

`ensure_env()` is idempotent: the venv carries a stamp with the requirements file's sha256 and is
rebuilt from scratch (`venv --clear`) only when the stamp is missing or differs. It needs a
Python >= 3.11 (ibeis 2.6.0's Requires-Python) and the package registry; it raises
`PeerEnvError` with the pip log's tail when either is missing.

    python -m bench.peers.hotspotter_env          # build (or check) it, print its python
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REQUIREMENTS = HERE / "hotspotter-requirements.txt"
ENV_DIR = REPO / "bench" / ".peers" / "hotspotter"
STAMP_NAME = ".requirements-sha256"
MIN_PYTHON = (3, 11)
# Imported once after the install: the modules the job script needs.
CHECK_IMPORTS = "import ibeis, utool, vtool_ibeis, pyhesaff, pyflann_ibeis, cv2; print(ibeis.__version__)"


class PeerEnvError(RuntimeError):
    """The peer environment cannot be built or used here."""


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def env_python(env_dir: Path = ENV_DIR) -> Path:
    return env_dir / "bin" / "python"


def peer_subprocess_env() -> dict:
    """Our environment minus what would leak our venv into the peer's python; headless Qt/mpl."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(PYTHONNOUSERSITE="1", MPLBACKEND="Agg", QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
    return env


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def find_base_python(explicit: str | None = None) -> str:
    """The interpreter the peer venv is made from: `explicit`, $FLUKELINE_PEER_PYTHON, the base
    interpreter behind the running python, then python3.11 / python3.12 / python3 on PATH."""
    candidates = [explicit, os.environ.get("FLUKELINE_PEER_PYTHON"), getattr(sys, "_base_executable", None)]
    candidates += [shutil.which(name) for name in ("python3.11", "python3.12", "python3.13", "python3")]
    tried = []
    for candidate in candidates:
        if not candidate or candidate in tried:
            continue
        tried.append(candidate)
        version = _python_version(candidate)
        if version is not None and version >= MIN_PYTHON:
            return candidate
        if explicit and candidate == explicit:
            raise PeerEnvError(f"{explicit} is Python {version}; ibeis 2.6.0 needs >= 3.11")
    raise PeerEnvError(f"no Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} found (tried {tried}); ibeis 2.6.0 needs one")


def is_ready(env_dir: Path = ENV_DIR, requirements: Path = REQUIREMENTS) -> bool:
    stamp = env_dir / STAMP_NAME
    return (
        env_python(env_dir).exists()
        and stamp.is_file()
        and stamp.read_text().strip() == requirements_hash(requirements)
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_logged(command: list[str], log: Path, what: str, env: dict) -> None:
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        rc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise PeerEnvError(f"{what} failed (exit {rc}); the log {log} ends:\n{_tail(log)}")


def ensure_env(
    env_dir: Path = ENV_DIR, requirements: Path = REQUIREMENTS, python: str | None = None, quiet: bool = False
) -> Path:
    """Make (or reuse) the peer venv; return its python. Safe to call from parallel processes."""
    env_dir = Path(env_dir)
    if is_ready(env_dir, requirements):
        return env_python(env_dir)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = env_dir.parent / f".{env_dir.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_ready(env_dir, requirements):  # another process built it while we waited
            return env_python(env_dir)
        base = find_base_python(python)
        log = env_dir.parent / f"{env_dir.name}-install.log"
        log.write_text("")
        env = peer_subprocess_env()
        started = time.perf_counter()
        if not quiet:
            print(f"[hotspotter_env] building {env_dir} from {base} (log: {log})", file=sys.stderr)
        (env_dir / STAMP_NAME).unlink(missing_ok=True)
        _run_logged([base, "-m", "venv", "--clear", str(env_dir)], log, "creating the venv", env)
        pip = [str(env_python(env_dir)), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        _run_logged([*pip, "install", "-r", str(requirements)], log, "pip install -r hotspotter-requirements.txt", env)
        _run_logged([str(env_python(env_dir)), "-c", CHECK_IMPORTS], log, "importing ibeis in the peer env", env)
        (env_dir / STAMP_NAME).write_text(requirements_hash(requirements) + "\n")
        if not quiet:
            print(f"[hotspotter_env] ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return env_python(env_dir)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="base interpreter for the venv (default: see find_base_python)")
    args = parser.parse_args(argv)
    try:
        print(ensure_env(python=args.python))
    except PeerEnvError as err:
        print(f"hotspotter_env: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
