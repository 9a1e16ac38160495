"""Our launchers pass Hydra's own launcher conformance suite (as hydra-submitit-launcher's tests do)."""

import pytest
from hydra.test_utils.launcher_common_tests import LauncherTestSuite

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("launcher_name, overrides", [
    ("local", ["hydra.launcher.timeout_min=2", "hydra.launcher.max_parallel=2", "hydra.launcher.cpus_per_task=1"]),
])
class TestLocalLauncher(LauncherTestSuite):
    pass
