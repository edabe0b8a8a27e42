"""The README's Python example runs as pasted (RegimeMonitor on a plain Keras CNN, Fashion-MNIST
from the Debian package)."""
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _python_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```$", f.read(), re.M | re.S)


def test_the_readme_has_its_regime_monitor_example():
    assert [block for block in _python_blocks() if "RegimeMonitor(" in block]


@pytest.mark.slow
@pytest.mark.parametrize("block", _python_blocks())
def test_each_python_example_of_the_readme_runs_as_pasted(tmp_path, block):
    if not os.path.isdir(FASHION_MNIST) and not os.environ.get("CI"):
        pytest.skip(f"{FASHION_MNIST} missing: apt-get install dataset-fashion-mnist")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if "RegimeMonitor(" in block:  # its verdict printed, its TensorBoard log written
        assert "Test error: network" in result.stdout
        assert os.listdir(tmp_path / "runs" / "my_fit")
