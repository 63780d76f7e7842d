"""YAML files: one-line errors naming the file, line and column."""

import pytest

from nostride.utils.yamlio import read_yaml


def test_read_yaml_errors_are_one_line_with_the_place(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [\n")
    with pytest.raises(ValueError) as e:
        read_yaml(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: not valid YAML: line 3, column 1:")

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: 1\n\xff\xfe: 2\n")
    with pytest.raises(ValueError, match=r"binary.yaml: not valid YAML: not UTF-8 text \(byte 5\)$"):
        read_yaml(binary)


def test_read_yaml_reads_safely(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: [2, 3]\n")
    assert read_yaml(good) == {"a": 1, "b": [2, 3]}
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        read_yaml(unsafe)
