"""A non-editable install (`pip install .`, the Docker image) ships every subpackage and config file."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the project supports 3.10 too

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_subpackage():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mtrl_famo").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


def test_package_data_patterns_reach_every_config_file():
    depth = max(len(p.relative_to(ROOT / "configs").parts) for p in (ROOT / "configs").rglob("*.yaml"))
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(pattern.count("/") + 1 >= depth for pattern in patterns["mtrl_famo.configs"])
