"""Reading weights files safely: what a file is, one-line errors, and checks of what was read.

Every weights file nostride reads (checkpoints for val / predict / export / resume, ``--weights``
starting points, conversions) goes through :func:`read_weights_file`:

* it is loaded with ``torch.load(..., weights_only=True)``: tensors and plain data only, nothing in
  the file ever runs;
* anything that is not such a file gets one line naming the file and saying what it is instead
  (:func:`describe_file`: text, an HTML page, a Git LFS pointer, ONNX, TorchScript, safetensors,
  HDF5, an image, a truncated or damaged archive, a pickle of Python objects, ...);
* the loaded object is checked to be a finite tree (a crafted pickle can build a dict that contains
  itself; walking it would recurse forever) of a bounded size once expanded (:func:`check_tree`:
  shared references counted each time, tensor sizes against the file's size), before anything
  touches its tensors: a small file never forces a large allocation or a long walk.

:func:`tensor_checksums` / :func:`verify_checksums` store and check a CRC-32 of every tensor's
bytes, so flipped bytes inside tensor data are reported instead of loading silently.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .utils.numbers import plural

__all__ = [
    "WeightsFileError",
    "describe_file",
    "read_weights_file",
    "check_tree",
    "iter_tensors",
    "tensor_checksums",
    "verify_checksums",
    "conform_state_dict",
]

_TORCH_ZIP_MARK = "data.pkl"
_MAX_DEPTH = 64  # nesting deeper than any checkpoint has: a crafted or cyclic structure


class WeightsFileError(ValueError):
    """A weights file that cannot be used; the message (one line) names the file and what is wrong."""


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _text_kind(head: bytes) -> str | None:
    text = head.decode("utf-8", errors="replace")  # the head may end inside a character
    printable = sum((c.isprintable() and c != "\ufffd") or c in "\r\n\t" for c in text)
    if not text or printable < 0.95 * len(text):
        return None
    low = text.lstrip().lower()
    if low.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (fetch it with `git lfs pull`)"
    if low.startswith(("<!doctype html", "<html")) or "<html" in low[:200]:
        return "an HTML page (a download that returned a web page instead of the file?)"
    if low.startswith(("{", "[")):
        return "a JSON/text file"
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"a text file (it starts with {first!r})"


def describe_file(path: str | os.PathLike) -> str:
    """What ``path`` holds, in words (``"an ONNX model"``, ``"a truncated or damaged zip archive"``...).

    Only the first bytes (and, for zip archives, the member list) are read.
    """
    path = Path(path)
    if path.is_dir():
        return "a folder"
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    head = _head(path)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "a truncated or damaged zip archive (an interrupted download or copy?)"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "a TorchScript model (torch.jit.save), not a checkpoint"
        if any(n.endswith(_TORCH_ZIP_MARK) for n in names):
            return "a torch.save archive"
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            return "a Keras model (.keras)"
        return f"a zip archive that is not a torch.save file (it holds {', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return "a pickle file (legacy torch.save format or plain pickle)"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (Keras .h5 weights?)"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff") or head[:6] in (b"GIF87a", b"GIF89a"):
        return "an image"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive (unpack it first)"
    if len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < size:
        return "a safetensors file"
    if head[:1] == b"\x08" and (b"onnx" in head.lower() or path.suffix.lower() == ".onnx" or b"pytorch" in head):
        return "an ONNX model (an exported network: run it with ONNX Runtime; nostride reads checkpoints)"
    text = _text_kind(head)
    if text:
        return text
    return "binary data of an unknown format"


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def read_weights_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with one-line errors that say what the file is.

    This is the one way nostride reads a ``.pt``/``.pth`` file: nothing in the file runs, and
    any failure is a :class:`WeightsFileError` naming the file (never a traceback, never a hint to
    load with fewer checks).

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: not a ``torch.save`` file of tensors and plain data, truncated, damaged,
            or a structure that contains itself.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.is_dir():
        raise WeightsFileError(f"{path}: is a folder, expected a weights file (.pt)")
    try:
        kind = describe_file(path)
    except OSError as e:
        raise WeightsFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    if kind not in ("a torch.save archive", "a pickle file (legacy torch.save format or plain pickle)"):
        raise WeightsFileError(f"{path}: not a PyTorch weights file: it is {kind}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except RecursionError:
        raise WeightsFileError(f"{path}: its data nests too deeply to be a weights file (a crafted or corrupt file)") from None
    except MemoryError:
        raise WeightsFileError(f"{path}: reading it would need more memory than is available (a corrupt or crafted file?)") from None
    except Exception as e:  # noqa: BLE001: every failure of the safe unpickler means "not a file we read"
        msg = _one_line(e)
        if "weights_only" in msg.lower() or "weights only" in msg.lower() or "unsupported global" in str(e).lower():
            raise WeightsFileError(
                f"{path}: holds pickled Python objects (classes or functions), not only tensors and plain "
                "data; nostride never runs code from a weights file. A YOLOv5 .pt is converted with "
                "`nostride import FILE OUT.pt`; a pickled model is saved as its state_dict() first"
            ) from None
        if any(s in msg for s in ("central directory", "zip archive", "PytorchStreamReader", "unexpected EOF",
                                  "Ran out of input", "truncated", "invalid load key")):
            raise WeightsFileError(f"{path}: truncated or damaged ({msg})") from None
        raise WeightsFileError(f"{path}: cannot be read as a weights file ({type(e).__name__}: {msg})") from None
    check_tree(obj, path, file_size=path.stat().st_size)
    check_dense(obj, path)
    return obj


def check_dense(obj: Any, path: str | os.PathLike | None = None) -> None:
    """Raise :class:`WeightsFileError` naming the first tensor of ``obj`` (a checked tree of dicts,
    lists and tuples) that is not a dense tensor: sparse or other layouts are never weights nostride
    wrote, and fail later inside checksums or ``load_state_dict`` with an internal error."""
    where = f"{path}: " if path is not None else ""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        name, o = stack.pop()
        if isinstance(o, torch.Tensor):
            if o.layout != torch.strided:
                raise WeightsFileError(f"{where}tensor {name or '(top level)'!r} is stored as a {o.layout} tensor; "
                                       "weights must be dense tensors (convert it with .to_dense() before saving)")
        elif isinstance(o, dict):
            stack += [(f"{name}/{k}" if name else str(k), v) for k, v in o.items()]
        elif isinstance(o, (list, tuple)):
            stack += [(f"{name}[{i}]", v) for i, v in enumerate(o)]


MAX_ELEMENTS = 1_000_000  # containers and values, shared references counted each time they are met (checkpoints: thousands)
_SLACK_BYTES = 64 * 2**20


def max_data_bytes(file_size: int | None) -> int | None:
    """How many bytes of tensor and array data (shared ones counted each time they are referenced)
    a file of ``file_size`` bytes may expand to: 4x its size plus 64 MB. Weights are stored whole
    in the file, so real checkpoints stay near 1x (2x with tied weights); a few bytes that declare
    gigabytes (a huge view of a one-element storage, a structure referencing one tensor 2^30
    times) are refused before anything is allocated."""
    return None if file_size is None else 4 * int(file_size) + _SLACK_BYTES


def _data_bytes(o: Any) -> int | None:
    """Bytes a leaf stands for once materialised (a tensor's elements, an array's, a string's)."""
    if isinstance(o, torch.Tensor):
        return o.numel() * o.element_size() if o.layout == torch.strided else o.element_size()
    if isinstance(o, (str, bytes, bytearray)):
        return len(o)
    nbytes = getattr(o, "nbytes", None)  # numpy arrays and scalars
    return nbytes if isinstance(nbytes, int) and not isinstance(nbytes, bool) else None


def _default_children(o: Any) -> list[Any] | None:
    if isinstance(o, dict):
        return list(o.keys()) + list(o.values())
    if isinstance(o, (list, tuple, set, frozenset)):
        return list(o)
    if getattr(o, "dtype", None) is not None and getattr(o, "dtype", None) == object and hasattr(o, "ravel"):
        return list(o.ravel())  # a numpy array of Python objects holds references, not data
    return None


def check_tree(obj: Any, path: str | os.PathLike | None = None, file_size: int | None = None,
               children: Callable[[Any], list[Any] | None] | None = None) -> tuple[int, int]:
    """Raise :class:`WeightsFileError` if ``obj`` contains itself, nests deeper than any checkpoint,
    or would be too large once expanded; returns ``(elements, data bytes)`` as expanded.

    Containers met twice are fine (shared, not cyclic) as long as no container is its own ancestor;
    but they count as often as they are referenced, as any later copy, walk or conversion expands
    them: a "DAG bomb" (a list holding the same list twice, 40 levels deep: 2^40 elements from a
    few hundred bytes) is refused in milliseconds (each shared container is walked once).

    Args:
        obj: what was unpickled.
        path: the file, for messages.
        file_size: the file's size: tensor data beyond :func:`max_data_bytes` of it is refused.
        children: the children of container types beyond dict/list/tuple/set (``None`` for leaves).
    """
    where = f"{path}: " if path is not None else ""
    budget = max_data_bytes(file_size)

    def get(o: Any) -> list[Any] | None:
        c = _default_children(o)
        return c if c is not None or children is None else children(o)

    memo: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    root = get(obj)
    if root is None:
        size = _data_bytes(obj) or 0
        _check_budget(where, 1, size, budget)
        return 1, size
    # each frame: [node, its children, next child index, elements so far, bytes so far, depth]
    stack: list[list[Any]] = [[obj, root, 0, 1, 0, 0]]
    active.add(id(obj))
    result = (0, 0)
    while stack:
        frame = stack[-1]
        node, items, i, depth = frame[0], frame[1], frame[2], frame[5]
        if i == len(items):
            stack.pop()
            active.discard(id(node))
            memo[id(node)] = result = (frame[3], frame[4])
            if stack:
                parent = stack[-1]
                parent[3] += frame[3]
                parent[4] += frame[4]
                _check_budget(where, parent[3], parent[4], budget)
            continue
        frame[2] = i + 1
        child = items[i]
        key = id(child)
        if key in memo:
            n, b = memo[key]
        else:
            sub = get(child)
            if sub is not None:
                if key in active:
                    raise WeightsFileError(f"{where}its data contains itself (a cyclic structure: a crafted or corrupt file)")
                if depth + 1 > _MAX_DEPTH:
                    raise WeightsFileError(f"{where}its data nests more than {_MAX_DEPTH} levels deep (a crafted or corrupt file)")
                stack.append([child, sub, 0, 1, 0, depth + 1])
                active.add(key)
                continue
            n, b = 1, _data_bytes(child) or 0
        frame[3] += n
        frame[4] += b
        _check_budget(where, frame[3], frame[4], budget)
    return result


def _check_budget(where: str, elements: int, data: int, budget: int | None) -> None:
    if elements > MAX_ELEMENTS:
        raise WeightsFileError(
            f"{where}its data would expand to more than {MAX_ELEMENTS:,} values (structures referenced over and "
            "over: a crafted or corrupt file); refused before expanding it")
    if budget is not None and data > budget:
        raise WeightsFileError(
            f"{where}its tensors would take at least {data / 2**20:,.0f} MB in memory, far more than the file "
            f"holds (at most {budget / 2**20:,.0f} MB for a file of this size: tensors declared larger than their "
            "data, or referenced over and over; a crafted or corrupt file); refused before allocating")


_END = object()


def iter_tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of a state dict (a flat ``str -> Tensor`` dict); other values are skipped."""
    if isinstance(state, dict):
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                yield f"{prefix}{k}", v


def _crc32(t: torch.Tensor) -> int:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.numel() == 0:
        return 0
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()
    return zlib.crc32(memoryview(raw)) & 0xFFFFFFFF


def tensor_checksums(ckpt: dict[str, Any], keys: tuple[str, ...] = ("model", "ema")) -> dict[str, int]:
    """CRC-32 of the bytes of every tensor in the state dicts ``ckpt[key]``, as ``{"key/name": crc}``."""
    out: dict[str, int] = {}
    for key in keys:
        for name, t in iter_tensors(ckpt.get(key), f"{key}/"):
            out[name] = _crc32(t)
    return out


def verify_checksums(ckpt: dict[str, Any], path: str | os.PathLike, keys: tuple[str, ...] = ("model", "ema")) -> None:
    """Compare the tensors of ``ckpt`` with its stored ``checksums`` (if any).

    Raises:
        WeightsFileError: a tensor's bytes differ from what was written (the file was damaged), or
            a tensor listed in the checksums is missing.
    """
    stored = ckpt.get("checksums")
    if stored is None:
        return
    if not isinstance(stored, dict):
        raise WeightsFileError(f"{path}: entry 'checksums' must be a dict, got {type(stored).__name__}")
    now = tensor_checksums(ckpt, keys)
    bad = [k for k, crc in now.items() if k in stored and stored[k] != crc]
    gone = [k for k in stored if k not in now]
    if bad:
        raise WeightsFileError(
            f"{path}: checksum mismatch in {plural(len(bad), 'tensor')} (e.g. {bad[0]}): "
            "the file was damaged after it was written; use another copy")
    if gone:
        raise WeightsFileError(f"{path}: {plural(len(gone), 'tensor')} listed in its checksums not found (e.g. {gone[0]})")


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating"
    return "bool" if dtype == torch.bool else "integer"


def conform_state_dict(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                       where: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The one rule for tensors whose type differs from the model's: ``(state, notes)``.

    * another floating type (float16, bfloat16, float64 where the model has float32): converted,
      and said in ``notes`` (``"3 tensors stored as float16, converted to float32"``);
    * another integer width (int32 where the model has int64): converted, likewise;
    * complex numbers where the model has real ones (the imaginary part would be dropped), integers
      or booleans where it has floating point (or the reverse), a sparse or quantized tensor:
      refused (:class:`WeightsFileError`, one line naming the file and a tensor).

    Tensors absent from ``expected`` are left as they are (architecture checks report them).
    """
    out = dict(state)
    converted: dict[tuple[str, str], int] = {}
    for name, t in state.items():
        e = expected.get(name)
        if not isinstance(t, torch.Tensor) or not isinstance(e, torch.Tensor):
            continue
        if t.layout != torch.strided or t.is_quantized:
            raise WeightsFileError(f"{where}: tensor {name!r} is stored as a {str(t.layout).replace('torch.', '')}"
                                   f"{' quantized' if t.is_quantized else ''} tensor; the model expects a dense "
                                   f"{str(e.dtype).replace('torch.', '')} one (refused)")
        if t.dtype == e.dtype:
            continue
        have, want = _kind(t.dtype), _kind(e.dtype)
        if have != want or have in ("complex", "bool"):
            lost = " (its imaginary part would be dropped)" if have == "complex" else ""
            raise WeightsFileError(
                f"{where}: tensor {name!r} holds {have} numbers ({str(t.dtype).replace('torch.', '')}) where the model "
                f"has {want} ones ({str(e.dtype).replace('torch.', '')}){lost}: not weights of this model (refused)")
        out[name] = t.to(e.dtype)
        pair = (str(t.dtype).replace("torch.", ""), str(e.dtype).replace("torch.", ""))
        converted[pair] = converted.get(pair, 0) + 1
    notes = [f"{plural(n, 'tensor')} stored as {a}, converted to {b}" for (a, b), n in sorted(converted.items())]
    return out, notes
