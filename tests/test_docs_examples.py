"""The documentation's Python examples run, and its relative links point at existing files.

Every ```python block of README.md and docs/*.md is executed: one test per file, the file's blocks in
order sharing one namespace (later examples use what earlier ones defined, as a reader would), in a
temporary working directory so examples that write files leave nothing in the repository.

A block opts out only with an HTML comment on the line right before its fence, giving the reason:

    <!-- docs-test: skip (needs a CUDA GPU) -->

Use it only for what a test machine cannot have (a GPU, torchrun on several GPUs, full-size datasets,
a real downloaded YOLOv5 .pt), never to hide a broken example. Blocks in other languages (bash, yaml,
text) are not executed; the CLI has its own tests. A block written as an interactive session
(``>>>`` prompts) runs as a doctest, so the outputs it shows must be what the code prints; so must
the plain/``text`` block that follows a python block directly or after a lead-in line "prints" /
"Output ...:" (``...`` matches anything; a lead-in saying the output "varies" exempts the block).

Examples run from a directory laid out like a checkout: docs/ is there, and the real
datasets are at ../datasets (the real data folder, see docs/data.md "The datasets the examples
use"; a file whose examples need them is skipped when they are absent).
A file whose examples import an optional package (an extra: timm, keras, ultralytics...) that is not
installed is skipped from that example on, as tests of an extra are.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED_DATA, shared_data_shadow

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
_SKIP_LOOSE = re.compile(r"docs-test\s*:", re.I)  # any marker, well-formed or not
_IMPORT = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", re.M)
# packages of extras (pyproject.toml optional-dependencies), not of the core install
_OPTIONAL_PACKAGES = {"timm", "keras", "ultralytics", "onnx", "onnxruntime", "onnxscript", "openvino", "tensorboard", "ncnn", "pnnx"}
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@dataclass
class CodeBlock:
    lang: str
    code: str
    line: int  # 1-based line of the first code line in the markdown file
    skip_reason: str | None
    end_line: int = 0  # 1-based line of the closing fence
    expected_output: str | None = None  # the output block shown right after a python block


def _relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def parse_markdown(text: str, name: str = "<markdown>") -> tuple[list[CodeBlock], list[tuple[int, str]]]:
    """Split markdown into fenced code blocks and the (line, text) of prose lines outside them.

    Raises ValueError for a skip marker that is malformed, lacks a reason or is not right before a
    fence, and for an unclosed fence: a marker that silently does nothing would hide an example.
    """
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    prose: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            if _SKIP_LOOSE.search(lines[i]):
                match = _SKIP.match(lines[i])
                if not match or not match["reason"].strip():
                    raise ValueError(f"{name}:{i + 1}: malformed skip marker, expected "
                                     "'<!-- docs-test: skip (reason) -->'")
                if i + 1 >= len(lines) or not _FENCE.match(lines[i + 1]):
                    raise ValueError(f"{name}:{i + 1}: skip marker must be on the line right "
                                     "before a code fence")
            else:
                prose.append((i + 1, lines[i]))
            i += 1
            continue
        indent, fence, lang = opening.groups()
        previous = _SKIP.match(lines[i - 1]) if i > 0 else None
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end >= len(lines):
            raise ValueError(f"{name}:{i + 1}: code fence never closed")
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start:end]]
        blocks.append(CodeBlock(lang.lower(), "\n".join(body) + "\n", start + 1,
                                previous["reason"].strip() if previous else None, end + 1))
        i = end + 1
    _attach_outputs(blocks, lines)
    return blocks, prose


def _attach_outputs(blocks: list[CodeBlock], lines: list[str]) -> None:
    """A python block followed by a plain or ``text`` block, with nothing between them or only a
    lead-in line such as "prints" / "Output (...):", shows what it prints. A lead-in that says the
    output varies ("varies from run to run") exempts it."""
    for block, following in zip(blocks, blocks[1:]):
        if block.lang not in ("python", "py") or following.lang not in ("", "text"):
            continue
        between = [line.strip() for line in lines[block.end_line:following.line - 2] if line.strip()]
        if len(between) > 1 or (between and not re.match(r"^(prints|output)\b", between[0], re.I)):
            continue
        if between and "varies" in between[0].lower():
            continue
        block.expected_output = following.code


def _python_blocks(path: Path) -> list[CodeBlock]:
    blocks, _ = parse_markdown(path.read_text(encoding="utf-8"), _relative(path))
    return [block for block in blocks if block.lang in ("python", "py")]


FILES_WITH_PYTHON = [path for path in DOC_FILES if _python_blocks(path)]
# repository folders examples may read (the docs say "run from the repository root")
_REPO_ENTRIES = ("docs",)


def _reader_checkout(tmp_path: Path) -> Path:
    """A working directory laid out like a checkout: <tmp>/repo (docs/ linked read-only
    from the real repository) beside <tmp>/datasets (the real datasets, when present), so the
    examples' paths work as written while everything they write stays in tmp_path."""
    work = tmp_path / "repo"
    work.mkdir()
    for name in _REPO_ENTRIES:
        if (REPO_ROOT / name).exists():
            (work / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    shadow = shared_data_shadow()  # files written beside the data (label caches) stay in tmp folders
    if shadow is not None:  # the docs' ../datasets/ (data.md: the datasets the examples use)
        (tmp_path / "datasets").symlink_to(shadow, target_is_directory=True)
    return work


def _run_doctest(block: CodeBlock, doc: Path, namespace: dict) -> None:
    """Run a ``>>>`` block as a doctest: the shown outputs must be what the code prints."""
    test = doctest.DocTestParser().get_doctest(block.code, namespace, _relative(doc), str(doc),
                                               block.line - 1)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=report.append, clear_globs=False)
    if runner.failures:
        raise AssertionError("".join(report))


def _check_output(block: CodeBlock, printed: str) -> None:
    """The output the docs show after a block is what it printed (``...`` matches anything)."""
    if block.expected_output is None:
        return
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    if not doctest.OutputChecker().check_output(block.expected_output, printed, flags):
        raise AssertionError(f"the output shown after the block differs from what it prints:\n"
                             f"--- shown\n{block.expected_output}--- printed\n{printed}")


@pytest.mark.parametrize("doc", FILES_WITH_PYTHON, ids=_relative)
@pytest.mark.slow
def test_python_examples_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(_reader_checkout(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # examples that plot must not need a display
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for block in _python_blocks(doc):
        if block.skip_reason is not None:
            continue
        if "../datasets/" in block.code and not SHARED_DATA.is_dir():
            pytest.skip(f"{_relative(doc)}:{block.line} and later examples need the real data "
                        f"(not found at {SHARED_DATA})")
        missing = [m for m in _IMPORT.findall(block.code)
                   if m in _OPTIONAL_PACKAGES and importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"{_relative(doc)}:{block.line} and later examples need {', '.join(missing)} "
                        "(an optional extra, not installed)")
        try:
            if block.code.lstrip().startswith(">>>"):
                _run_doctest(block, doc, namespace)
            else:
                # pad with newlines so a traceback names the markdown file and its line number
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile("\n" * (block.line - 1) + block.code, str(doc), "exec"), namespace)
                _check_output(block, printed.getvalue())
        except Exception as error:
            raise AssertionError(f"example at {_relative(doc)}:{block.line} failed: "
                                 f"{type(error).__name__}: {error}") from error
        ran += 1
    if ran == 0:
        pytest.skip(f"every Python example of {_relative(doc)} is marked skip")


def _anchors(path: Path) -> set[str]:
    """GitHub-style heading anchors of a markdown file."""
    _, prose = parse_markdown(path.read_text(encoding="utf-8"), path.name)
    anchors: set[str] = set()
    for _, line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def broken_links(doc: Path) -> list[str]:
    """Relative links of a markdown file whose file (or ``#heading`` anchor) does not exist."""
    _, prose = parse_markdown(doc.read_text(encoding="utf-8"), doc.name)
    broken = []
    for number, line in prose:
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (doc.parent / file_part).resolve() if file_part else doc
            if not linked.exists():
                broken.append(f"{doc.name}:{number}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor.lower() not in _anchors(linked):
                broken.append(f"{doc.name}:{number}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOC_FILES, ids=_relative)
def test_relative_links_exist(doc: Path) -> None:
    broken = broken_links(doc)
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_link_checker_finds_missing_files_and_headings(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Export to ONNX\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n[ok](other.md) [ok](other.md#export-to-onnx) [ok](#doc) [web](https://x.org/y)\n"
                   "[gone](missing.md) [bad anchor](other.md#nope) `[code](not-a-link.md)`\n"
                   "```text\n[in a block](also-not-a-link.md)\n```\n")
    assert broken_links(doc) == ["doc.md:3: missing.md (no such file)",
                                 "doc.md:3: other.md#nope (no such heading)"]


def test_parser_reads_fences_and_skip_markers() -> None:
    text = ("# T\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip (needs a GPU) -->\n"
            "```python\ny = x.cuda()\n```\n\n```bash\nls\n```\n")
    blocks, _ = parse_markdown(text)
    assert [(b.lang, b.code, b.line, b.skip_reason) for b in blocks] == [
        ("python", "x = 1\n", 4, None), ("python", "y = x.cuda()\n", 9, "needs a GPU"),
        ("bash", "ls\n", 13, None)]


def test_parser_attaches_shown_outputs() -> None:
    text = ("```python\nprint(1)\n```\n\nprints\n\n```text\n1\n```\n"
            "```python\nprint(2)\n```\nprints (varies from run to run)\n```\n2\n```\n"
            "```python\nprint(3)\n```\nSome explanation.\n```\n3\n```\n")
    blocks, _ = parse_markdown(text)
    assert [b.expected_output for b in blocks if b.lang == "python"] == ["1\n", None, None]


@pytest.mark.parametrize("text", [
    "<!-- docs-test: skip -->\n```python\nx\n```\n",          # no reason
    "<!-- docs-test: skip () -->\n```python\nx\n```\n",        # empty reason
    "<!-- docs-test: skip (gpu) -->\n\n```python\nx\n```\n",   # not right before the fence
    "```python\nx\n",                                          # never closed
])
def test_parser_rejects_markers_that_would_silently_do_nothing(text: str) -> None:
    with pytest.raises(ValueError):
        parse_markdown(text)
