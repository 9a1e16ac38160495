"""Hydra's launcher conformance suite on `hydra/launcher=local` (run in its own pytest process by
tests/test_launchers.py: the suite's apps rely on Hydra's legacy defaults, which other tests' composes
with version_base="1.3" change process-wide)."""

import pytest
from hydra.test_utils.launcher_common_tests import LauncherTestSuite


@pytest.mark.parametrize("launcher_name, overrides", [
    ("local", ["hydra.launcher.timeout_min=2", "hydra.launcher.max_parallel=2", "hydra.launcher.cpus_per_task=1"]),
])
class TestLocalLauncher(LauncherTestSuite):
    pass
