"""TensorRT plan from the ONNX file, where TensorRT is installed (GPU machines; never on the CPU path)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class TensorRTUnavailable(RuntimeError):
    pass


def build_plan(onnx_path: Path, plan_path: Path, max_batch: int, input_size: int, fp16: bool = True) -> Path:
    """Builds with ``trtexec`` (shipped with TensorRT and in NVIDIA's containers); FP16 with LayerNorm in FP32."""
    trtexec = shutil.which("trtexec")
    if trtexec is None:
        raise TensorRTUnavailable("TensorRT is not installed here (no trtexec on PATH): use the `gpu` target, "
                                  "which lets Triton's onnxruntime backend build TensorRT engines at load time")
    shape = f"3x{input_size}x{input_size}"
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan_path}",
           f"--minShapes=pixels:1x{shape}", f"--optShapes=pixels:{max(1, max_batch // 2)}x{shape}",
           f"--maxShapes=pixels:{max_batch}x{shape}"]
    if fp16:
        cmd += ["--fp16", "--layerPrecisions=*LayerNorm*:fp32", "--precisionConstraints=prefer"]
    subprocess.run(cmd, check=True)
    return Path(plan_path)
