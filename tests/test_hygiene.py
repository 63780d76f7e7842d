"""The test run stays in its temporary folders: the checks of conftest.py, tried on a run that does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hygiene
from conftest import RUN_TMP


def test_every_cache_variable_and_home_point_into_the_runs_temporary_folder():
    from nostride.utils.cache import user_cache_dir

    for var in (*hygiene.CACHE_VARIABLES, "HOME"):
        assert Path(os.environ[var]).is_relative_to(RUN_TMP), var
    assert user_cache_dir().is_relative_to(RUN_TMP) and Path.home().is_relative_to(RUN_TMP)


def test_snapshot_changes_name_added_changed_and_removed_files(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "__pycache__").mkdir()
    before = hygiene.snapshot([tmp_path, tmp_path / "absent"])
    (tmp_path / "a.txt").write_text("aa")
    (tmp_path / "b.txt").unlink()
    (tmp_path / "runs" / "val" / "exp").mkdir(parents=True)
    (tmp_path / "__pycache__" / "x.pyc").write_text("")  # bookkeeping of the run: not counted
    found = hygiene.changes(before, hygiene.snapshot([tmp_path, tmp_path / "absent"]))
    assert f"changed {tmp_path / 'a.txt'}" in found and f"removed {tmp_path / 'b.txt'}" in found
    assert f"added {tmp_path / 'runs' / 'val' / 'exp'}" in found and not any("pyc" in f for f in found)


def test_shadow_tree_reads_the_real_files_and_keeps_new_ones(tmp_path):
    (tmp_path / "src" / "labels").mkdir(parents=True)
    (tmp_path / "src" / "labels" / "a.txt").write_text("0 0.5 0.5 1 1\n")
    shadow = hygiene.shadow_tree(tmp_path / "src", tmp_path / "dst")
    assert (shadow / "labels" / "a.txt").read_text() == "0 0.5 0.5 1 1\n"
    (shadow / "labels" / "train.cache").write_text("x")
    assert sorted(p.name for p in (tmp_path / "src" / "labels").iterdir()) == ["a.txt"]


@pytest.mark.slow
def test_a_run_that_writes_into_the_checkout_fails(tmp_path):
    """conftest.py in a throw-away checkout, with one test that writes runs/val/exp there, one that
    writes below ~ without asking a cache variable and one that writes where the variable says: the
    run fails and names the first two."""
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    here = Path(__file__).parent
    for name in ("conftest.py", "hygiene.py"):
        shutil.copy(here / name, repo / "tests" / name)
    (repo / "tests" / "test_bad.py").write_text(textwrap.dedent("""
        import os
        from pathlib import Path

        def test_writes_a_run_folder():
            Path("runs/val/exp").mkdir(parents=True)

        def test_writes_below_home_ignoring_the_cache_variables():
            os.makedirs(os.path.expanduser("~/.cache/nostride"))
            Path("~/.cache/nostride/x.npz").expanduser().write_text("x")

        def test_writes_where_a_cache_variable_says():
            Path(os.environ["NOSTRIDE_CACHE"], "y.npz").write_text("y")
    """))
    env = {k: v for k, v in os.environ.items() if k not in (*hygiene.CACHE_VARIABLES, "HOME")}
    env.update(HOME=str(tmp_path / "home"), NOSTRIDE_SHARED_DATA=str(tmp_path / "no-data"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout and "wrote outside their temporary folders" in proc.stderr
    assert "y.npz" not in proc.stderr
    assert f"added {repo / 'runs'}" in proc.stderr and "/home/.cache/nostride/x.npz" in proc.stderr
    assert not (tmp_path / "home").exists()  # the user's own home: untouched
