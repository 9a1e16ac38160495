"""Our local launcher passes Hydra's own launcher conformance suite (as hydra-submitit-launcher's tests do)."""

import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_hydra_launcher_test_suite_passes_on_the_local_launcher():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                           "-o", "addopts=", str(ROOT / "tests/launcher_suite")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "9 passed" in proc.stdout, proc.stdout[-2000:]
