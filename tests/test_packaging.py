"""What the wheel holds: the shipped recipes, usable by name from any folder once installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACKAGED_YAML = sorted((REPO_ROOT / "nostride").rglob("*.yaml"))


@pytest.mark.parametrize("path", PACKAGED_YAML, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_packaged_yaml_names_a_path_of_the_checkout(path):
    text = path.read_text()
    assert "shared/" not in text and str(REPO_ROOT) not in text


def test_a_recipe_by_name_with_or_without_the_folder(tmp_path, monkeypatch):
    from nostride.configs import CONFIG_DIR, find_config

    monkeypatch.chdir(tmp_path)
    for name in ("yolov5n_spd_coco", "yolov5n_spd_coco.yaml", "configs/yolov5n_spd_coco.yaml"):
        assert find_config(name) == CONFIG_DIR / "yolov5n_spd_coco.yaml"
    (tmp_path / "mine.yaml").write_text("epochs: 1\n")
    assert find_config("mine.yaml") == Path("mine.yaml")
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml.*resnet18_spd_cifar10"):
        find_config("nope.yaml")
    with pytest.raises(FileNotFoundError):
        find_config("elsewhere/yolov5n_spd_coco.yaml")  # a path that is not there is not a name


@pytest.mark.slow
def test_the_wheel_ships_the_recipes_and_they_load_by_name(tmp_path):
    src = tmp_path / "src"  # build from a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO_ROOT / "nostride", src / "nostride", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    # the PEP 517 backend pyproject.toml names, called as a build frontend calls it (pip would also
    # probe the machine's toolchains, writing their settings below ~)
    (tmp_path / "dist").mkdir()
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                    "build_meta.build_wheel(sys.argv[1])", str(tmp_path / "dist")],
                   check=True, timeout=300, cwd=src, capture_output=True)
    wheel = next((tmp_path / "dist").glob("nostride-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).stem for n in names if n.startswith("nostride/configs/") and n.endswith(".yaml")}
    assert shipped == {p.stem for p in (REPO_ROOT / "nostride" / "configs").glob("*.yaml")} and len(shipped) >= 16
    assert {"nostride/comparison/recipes/small-objects-cpu.yaml", "nostride/comparison/recipes/cifar-cpu.yaml"} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    # the lookup --config NAME goes through (nostride.engine.config.load_config_file), without torch
    code = ("import yaml; from nostride.configs import find_config as f; print(f('resnet18_spd_cifar10')); "
            "print(yaml.safe_load(f('resnet18_spd_cifar10').read_text())['model'], "
            "yaml.safe_load(f('coco128_yolov5n_cpu').read_text())['data'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    where, loaded = out.stdout.splitlines()
    assert Path(where).is_relative_to(site) and loaded == "resnet18_spd data/coco128/data.yaml"
