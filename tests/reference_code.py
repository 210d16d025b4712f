"""The code of a reference commit, run beside the working tree: for tests that compare with what an earlier
version computed or saved (bit-identical training, loading its checkpoints), on the same machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: main before the refactors of issues 17-20 (what the published benchmark sweeps ran). Update it only for a
#: change meant to alter training or the checkpoint format, and say so in the commit.
REFERENCE = "9b2679b"
#: main before the refactor of issue 25 (the last landed commit then): the first reference with RecurrentTRPO and
#: MaskableTRPO, which 9b2679b predates; it pins their training, vine's on a discrete space and the autograd Fisher
#: route's (tests/integration/test_bit_identical.py). Update it only for a change meant to alter training, and say so in the
#: commit.
FAMILY_REFERENCE = "fc0b3e8"
#: MaskableTRPO's reference since it collects in TRPO's loop with the speed layer's masked numpy actor (issue 26):
#: its actions are drawn from the model's generator, as TRPO's are, not from torch's (a change of every masked run's
#: draws, by design). Update it only for a change meant to alter training, and say so in the commit.
MASKABLE_REFERENCE = "111586c"


def reference_source(folder: Path, commit: str = REFERENCE) -> Path:
    """The package (and its hyperparameter files) at ``commit`` (:data:`REFERENCE` by default), unpacked under
    ``folder``; skips the test where the repository's history is not there (an sdist, a shallow clone)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git history (a clone of the repository)")
    archive = folder / f"reference-{commit}.tar"
    done = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), commit, "sb3_trpo_ext", "hyperparams"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"reference commit {commit} not in this clone: {done.stderr.strip()}")
    source = folder / f"reference-{commit}"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    return source


def run_with(source: Path, code: str, cwd: Path, *args: str) -> str:
    """Run ``code`` in a fresh interpreter that imports ``sb3_trpo_ext`` from ``source`` (one torch thread);
    return its last line of output."""
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]
