"""`import deepnet`, `import deepnet.cli` and `deepnet --help` stay light: no torch, Optuna,
scikit-learn or matplotlib until something needs them (each check in a fresh interpreter)."""

import ast
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import deepnet

HEAVY = ("torch", "optuna", "sklearn", "matplotlib")


def _heavy_modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import deepnet",
        "import deepnet.cli",
        "from deepnet import ConfigError, DeepNetError",
        "from click.testing import CliRunner\nfrom deepnet.cli import main\n"
        "assert 'search' in CliRunner().invoke(main, ['--help']).output",
    ],
)
def test_stays_light(code):
    assert _heavy_modules_after(code) == []


def test_a_worker_process_loads_torch_alone():
    # every search starts one per core, and waits for their imports before its first epoch
    assert _heavy_modules_after("import deepnet.search.worker") == ["torch"]


def test_a_name_is_imported_when_asked_for():
    assert {"torch", "sklearn"} <= set(_heavy_modules_after("from deepnet import GridSearchCV"))


def test_every_public_name_resolves_and_is_listed():
    for name in deepnet.__all__:
        assert getattr(deepnet, name) is not None
    assert set(deepnet.__all__) <= set(dir(deepnet))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        deepnet.nothing  # noqa: B018


def test_functions_named_like_their_module_stay_functions():
    code = (
        "import types, deepnet.tune, deepnet.evaluate\nfrom deepnet.train import data_info\n"
        "from deepnet import train, evaluate, tune\n"
        "assert not any(isinstance(f, types.ModuleType) for f in (train, evaluate, tune))\n"
        "assert callable(deepnet.train) and callable(deepnet.tune)"
    )
    assert "torch" in _heavy_modules_after(code)


def test_every_third_party_import_is_a_declared_dependency():
    """An install from the package alone (pip install .) has everything deepnet imports;
    what only an optional feature imports (ray) is in that feature's extra."""
    root = Path(deepnet.__file__).parent
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"deepnet"}
    distributions = importlib.metadata.packages_distributions()
    needed = {canonicalize_name(d) for m in third_party for d in distributions[m]}
    pyproject = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())
    project = pyproject["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    declared = {canonicalize_name(Requirement(r).name) for r in [*project["dependencies"], *extras]}
    assert needed - declared == set()


@pytest.mark.parametrize(("chosen", "policy"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_someone_chose(chosen, policy):
    """torch's OpenMP threads would otherwise spin on the cores the kernels' threads need;
    a policy the user set is kept. Checked in the process and in a worker it starts."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if chosen:
        env["OMP_WAIT_POLICY"] = chosen
    code = (
        "import os, subprocess, sys\nimport deepnet\nimport torch\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; "
        'print(os.environ["OMP_WAIT_POLICY"])\'], capture_output=True, text=True)\n'
        "print(os.environ['OMP_WAIT_POLICY'], child.stdout.strip())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [policy, policy]
