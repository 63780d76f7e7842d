"""Reading YAML files (``yaml.safe_load``) with one-line errors that name the file, line and column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MAX_YAML_VALUES", "YAMLTooLargeError", "read_yaml", "safe_load_bounded", "yaml_error_text"]


def yaml_error_text(error: Exception) -> str:
    """One line for a YAML or decoding error: ``line L, column C: problem`` where PyYAML knows the place."""
    import yaml

    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "syntax error"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({error.context})" if error.context and error.problem else ""
        return f"{where}{problem}{context}"
    return " ".join(str(error).split())


MAX_YAML_VALUES = 1_000_000  # values of a document with its aliases expanded; option and data files have hundreds


class YAMLTooLargeError(ValueError):
    """A YAML document whose aliases expand beyond :data:`MAX_YAML_VALUES` values (or refer to themselves)."""


def _expanded_size(node: Any, limit: int) -> int:
    """Values in a composed YAML node graph with every alias expanded (each shared node is walked
    once: a "billion laughs" document is measured in microseconds, not built)."""
    import yaml

    memo: dict[int, int] = {}
    active: set[int] = set()

    def kids(n: Any) -> list[Any]:
        if isinstance(n, yaml.SequenceNode):
            return list(n.value)
        if isinstance(n, yaml.MappingNode):
            return [x for pair in n.value for x in pair]
        return []

    stack: list[list[Any]] = [[node, kids(node), 0, 1]]
    active.add(id(node))
    total = 1
    while stack:
        frame = stack[-1]
        n, items, i = frame[0], frame[1], frame[2]
        if i == len(items):
            stack.pop()
            active.discard(id(n))
            memo[id(n)] = total = frame[3]
            if stack:
                stack[-1][3] += frame[3]
                if stack[-1][3] > limit:
                    raise YAMLTooLargeError(f"its aliases expand to more than {limit:,} values")
            continue
        frame[2] = i + 1
        child = items[i]
        if id(child) in memo:
            frame[3] += memo[id(child)]
        elif id(child) in active:
            raise YAMLTooLargeError("an alias refers to the structure that contains it")
        elif kids(child):
            stack.append([child, kids(child), 0, 1])
            active.add(id(child))
            continue
        else:
            frame[3] += 1
        if frame[3] > limit:
            raise YAMLTooLargeError(f"its aliases expand to more than {limit:,} values")
    return total


def safe_load_bounded(text: str, limit: int = MAX_YAML_VALUES) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose aliases expand beyond ``limit`` values
    ("billion laughs": a few lines of ``&a [*b, *b, ...]`` that any later walk would expand to
    gigabytes) before any Python object is built.

    Raises:
        yaml.YAMLError: not valid YAML.
        YAMLTooLargeError: aliases expand beyond ``limit`` values, or refer to their own container.
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, limit)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of the UTF-8 file ``path``, aliases bounded (:func:`safe_load_bounded`).

    Raises:
        ValueError: ``PATH: not valid YAML: line L, column C: problem`` on one line, or
            ``PATH: refused: its aliases expand to more than N values ...``.
    """
    import yaml

    path = Path(path)
    try:
        return safe_load_bounded(path.read_text(encoding="utf-8"))
    except YAMLTooLargeError as e:
        raise ValueError(f"{path}: refused: {e} (a crafted 'billion laughs' file?)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML: {yaml_error_text(e)}") from None
