"""Finding CuPy and a CUDA device, or saying in one line why `--device gpu` cannot run."""
from __future__ import annotations

INSTALL_HINT = "pip install 'rax[gpu]' (CuPy for CUDA 12; needs an NVIDIA GPU and its driver)"


class DeviceUnavailable(RuntimeError):
    """--device gpu cannot run on this machine; the message says why, in one line."""


def cuda_arrays():
    """The cupy module, once it has shown a working CUDA device."""
    try:
        import cupy
    except ImportError:
        raise DeviceUnavailable(f"--device gpu needs CuPy: {INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:     # no driver, a driver older than the CUDA runtime, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeviceUnavailable(f"--device gpu: CUDA is not usable here ({reason})") from None
    if count == 0:
        raise DeviceUnavailable("--device gpu: CuPy finds no CUDA device on this machine")
    return cupy


def check_room(xp, n_bytes: int, hint: str = "") -> None:
    """DeviceUnavailable unless the device has n_bytes free (weights about to be uploaded);
    the hint ends the message."""
    cuda = getattr(xp, "cuda", None)
    if cuda is None:            # NumPy standing in for CuPy (tests)
        return
    free, total = cuda.runtime.memGetInfo()
    if n_bytes > free:
        raise DeviceUnavailable(f"--device gpu: the weights take {n_bytes / 2**30:.1f} GiB on the GPU, which has "
                                f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f}{hint}")


def describe_gpu() -> str:
    """One line for `rax info`: the GPU --device gpu would use, or why there is none."""
    try:
        cupy = cuda_arrays()
    except DeviceUnavailable as exc:
        return f"none — {exc}"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    free, total = cupy.cuda.runtime.memGetInfo()
    name = name.decode() if isinstance(name, bytes) else str(name)
    return f"{name}, {free / 2**30:.1f} GiB free of {total / 2**30:.1f} (--device gpu)"
