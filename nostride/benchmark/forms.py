"""The forms a model is benchmarked in: each turns a model into a callable on a fixed input.

============== =============================================================== ==================
form           what runs                                                       needs
============== =============================================================== ==================
eager          the model as built (eval mode)                                  -
fused          :func:`nostride.fuse` of it (BN folded, no space-to-depth left) -
compile        ``torch.compile`` of the fused model                            a C++ compiler (CPU)
torchscript    ``torch.jit.trace`` + ``torch.jit.freeze`` of the fused model   -
onnxruntime    the fused model's ONNX export in ONNX Runtime                   onnx, onnxscript, onnxruntime
openvino       the same ONNX file compiled by OpenVINO (CPU)                   openvino
ncnn           the fused model through pnnx into ncnn (CPU, float32, one       pnnx, ncnn
               image at a time as ncnn runs them)
train          one training step of the model as built: forward in training   -
               mode, backward of the outputs' mean, gradients zeroed
============== =============================================================== ==================
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..convert.fuse import fuse

__all__ = ["FORMS", "FormUnavailable", "build_form"]

FORMS = ("eager", "fused", "compile", "torchscript", "onnxruntime", "openvino", "ncnn", "train")


class FormUnavailable(RuntimeError):
    """A form cannot run here (a missing package or runtime, an unsupported device); says why."""


@dataclass
class Runner:
    """A ready-to-call form: ``call()`` runs one inference on the fixed input."""

    call: Callable[[], object]
    module: nn.Module | None  # the PyTorch module it runs (for memory tracking), if any
    dtype: str


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def build_form(
    form: str, model: nn.Module, example: torch.Tensor, workdir: Path, threads: int | None = None, tag: str = "model"
) -> Runner:
    """Build ``form`` of ``model`` (already on ``example``'s device and dtype, in eval mode).

    Raises:
        FormUnavailable: the form cannot run here (the message says why).
        ValueError: an unknown form.
    """
    dtype = str(example.dtype).replace("torch.", "")
    if form == "eager":
        return Runner(_torch_call(model, example), model, dtype)
    if form == "fused":
        fused = fuse(model)
        return Runner(_torch_call(fused, example), fused, dtype)
    if form == "compile":
        compiled = torch.compile(fuse(model))
        try:
            with torch.inference_mode():
                compiled(example)  # compile now, so a failure is reported as unavailable
        except Exception as err:  # inductor raises many kinds (no compiler, unsupported op...)
            raise FormUnavailable(f"torch.compile failed: {str(err).splitlines()[0][:200]}") from None
        return Runner(_torch_call(compiled, example), None, dtype)
    if form == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(fuse(model), example))
        return Runner(_torch_call(traced, example), traced, dtype)
    if form in ("onnxruntime", "openvino"):
        return _onnx_form(form, model, example, workdir, threads, tag, dtype)
    if form == "ncnn":
        return _ncnn_form(model, example, workdir, tag, dtype)
    if form == "train":
        step = _train_step(copy.deepcopy(model).train(), example)
        try:
            step()  # e.g. BatchNorm refuses one value per channel (batch 1 and a 1x1 map) in training mode
        except (ValueError, RuntimeError) as err:
            raise FormUnavailable(f"a training step fails here: {str(err).splitlines()[0][:160]} "
                                  "(a larger --batch-size or --img-size may do)") from None
        return Runner(step, None, dtype)
    raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")


def _train_step(module: nn.Module, example: torch.Tensor) -> Callable[[], object]:
    """Forward in training mode, backward of the mean of every output (a stand-in for a loss whose own
    cost is left out), gradients zeroed: what a training step costs the model itself."""
    def call() -> object:
        out = module(example)
        parts = out if isinstance(out, (list, tuple)) else [out]
        sum(p.float().mean() for p in parts if isinstance(p, torch.Tensor)).backward()
        module.zero_grad(set_to_none=True)
        return None

    return call


def _torch_call(module: Callable, example: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            return module(example)

    return call


def _onnx_form(form: str, model: nn.Module, example: torch.Tensor, workdir: Path, threads, tag: str, dtype: str) -> Runner:
    needs = ["onnx", "onnxscript"] + (["onnxruntime"] if form == "onnxruntime" else ["openvino"])
    missing = _missing(*needs)
    if missing:
        extra = "onnx" if form == "onnxruntime" else "openvino"
        raise FormUnavailable(f"needs {', '.join(missing)} (pip install nostride[{extra}])")
    if example.dtype != torch.float32:
        raise FormUnavailable("runs float32 only here (drop --half)")
    from ..export import export_onnx

    path = workdir / f"{tag}-{'x'.join(map(str, example.shape))}.onnx"
    if not path.is_file():
        cpu_model = fuse(model).to("cpu").float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(cpu_model, path, tuple(example.shape), check=False)
    feed = example.detach().cpu().numpy()
    if form == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if example.device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise FormUnavailable("this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        name = session.get_inputs()[0].name
        return Runner(lambda: session.run(None, {name: feed}), None, dtype)
    if example.device.type != "cpu":
        raise FormUnavailable("benchmarked on the CPU device only")
    import openvino

    # float32 like every other form (OpenVINO's CPU default is bf16 where the CPU supports it)
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    return Runner(lambda: request.infer({0: feed}), None, dtype)


def _ncnn_form(model: nn.Module, example: torch.Tensor, workdir: Path, tag: str, dtype: str) -> Runner:
    missing = _missing("pnnx", "ncnn")
    if missing:
        raise FormUnavailable(f"needs {', '.join(missing)} (pip install nostride[ncnn])")
    if example.device.type != "cpu" or example.dtype != torch.float32:
        raise FormUnavailable("benchmarked on the CPU in float32 only")
    import ncnn
    import pnnx

    # pnnx derives its file names from the .pt path and turns "-" into "_": use neither
    stem = workdir / f"{tag.replace('-', '_')}_{'x'.join(map(str, example.shape[1:]))}_ncnn"
    param, weights = Path(f"{stem}.ncnn.param"), Path(f"{stem}.ncnn.bin")
    if not param.is_file() or not weights.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with _quiet_fds():  # pnnx's converter prints every pass to stdout/stderr
                    pnnx.export(fuse(model).float(), f"{stem}.pt", (example[:1],), fp16=False)
        except Exception as err:  # pnnx reports conversion failures in many ways
            raise FormUnavailable(f"pnnx could not convert it: {str(err).splitlines()[0][:160]}") from None
        if not param.is_file():
            raise FormUnavailable("pnnx wrote no ncnn model (its conversion failed)")
    net = ncnn.Net()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = torch.get_num_threads()
    net.load_param(str(param))
    net.load_model(str(weights))
    images = [ncnn.Mat(image.numpy()).clone() for image in example]
    n_outputs = _count_outputs(param)

    def call() -> object:
        results = []
        for image in images:
            ex = net.create_extractor()
            ex.input("in0", image)
            results.append([ex.extract(f"out{i}")[1] for i in range(n_outputs)])
        return results

    return Runner(call, None, dtype)


def _count_outputs(param: Path) -> int:
    """Blobs named out0, out1... in an ncnn .param file."""
    names = set(param.read_text().split())
    count = 0
    while f"out{count}" in names:
        count += 1
    return max(count, 1)


@contextlib.contextmanager
def _quiet_fds():
    """Silence file descriptors 1 and 2 (output of native code, which Python redirection misses)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
