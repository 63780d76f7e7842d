"""README.md's set-up commands are the ones CI runs (its Python examples: tests/test_docs_examples.py)."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_setup_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    setup = [line for line in _code_blocks(readme, "bash")[0].splitlines() if line.strip()]
    assert len(setup) == 2, "README must start with exactly two set-up commands (install, test)"
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    for command in setup:
        assert command in ci, f"CI does not run README's command: {command}"


def test_readme_gives_the_cpu_variant_and_the_quick_subset():
    """Next to the two set-up commands: the same install with the CPU build of torch, and the quick
    subset of the tests with its time."""
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = _code_blocks(readme, "bash")
    install = blocks[0].splitlines()[0]
    cpu = blocks[1].strip()
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu and "pip install torch torchvision" in cpu
    assert cpu.startswith(install.split("pip install")[0]) and cpu.endswith('pip install -e ".[test]"')
    assert blocks[2].strip() == 'python -m pytest -m "not slow"'
    around = readme[readme.index(blocks[1]): readme.index(blocks[2])]
    assert re.search(r"\b\d+(\.\d+)? (s|seconds|minutes?)\b", around), "the quick subset's time is stated"
    markers = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"slow:' in markers  # the marker the quick subset leaves out is declared
