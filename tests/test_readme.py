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
