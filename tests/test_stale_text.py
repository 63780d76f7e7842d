"""Help texts and docs say what the product does now, and docs name only paths a user has."""

from __future__ import annotations


import pytest

from conftest import REPO_ROOT
from nostride.cli import build_parser

USER_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_user_docs_name_no_path_of_the_development_machines(doc):
    text = doc.read_text()
    assert "../shared" not in text and "shared/data" not in text and "shared/reference" not in text


def test_top_level_help_names_every_model_source_and_benchmark_form():
    from nostride.benchmark.forms import FORMS

    parser = build_parser()
    commands = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    assert "timm" in commands["convert"]
    forms = next(a for a in parser.subcommands["benchmark"]._actions if a.dest == "forms")
    assert all(f in forms.help for f in FORMS)


def test_readme_status_does_not_say_a_detection_study_is_missing():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "no detection study" not in readme
    evidence = (REPO_ROOT / "docs" / "evidence.md").read_text()
    assert "## Detection:" in evidence  # what the status points at
