"""The import rule, by import-linter's contracts in pyproject.toml: backend's layers
(run > api | dispatch > telemetry > jobs > core), and compute/ free of backend/."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout and "2 kept" in run.stdout, run.stdout


def test_the_readme_names_every_module_of_backend():
    """The README's Layout is the map of backend/: a module missing from it is a module
    nobody will find."""
    layout = (REPO / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    modules = [p for p in (REPO / "backend").rglob("*.py") if p.name != "__init__.py"]
    assert modules
    assert not [str(p.relative_to(REPO)) for p in modules if f"`{p.name}`" not in layout]
