"""The demo's test identities are read by the evaluate rule only: no training or matching module
of the package names the truth file (the dry-run checks are in tests/workflow/test_truth_isolation.py)."""

from conftest import REPO


def test_no_training_or_matching_module_names_the_truth_file():
    package = REPO / "src" / "flukeline"
    readers = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py") if "test_truth" in p.read_text())
    # evaluate/scores.py scores against it; the evaluate command names the flag; the generators write it.
    assert set(readers) <= {
        "evaluate/scores.py",
        "evaluate/commands.py",
        "data/demo/generate.py",
        "data/omniglot.py",
    }, readers
    assert readers, "the scan found no module at all: the package moved?"
