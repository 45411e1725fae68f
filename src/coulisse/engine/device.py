"""The device a pipeline runs on, parsed and checked once, before any weight is loaded.

torch answers a GPU request it cannot serve with an AssertionError ("Torch not compiled with CUDA enabled")
or a RuntimeError from deep inside `.to()`; here each case is one DeviceError that names the installed
torch build and the fix.
"""

from __future__ import annotations

import os

import torch

from coulisse.errors import DeviceError

INSTALL_SELECTOR = "https://pytorch.org/get-started/locally/"
WHEEL_INDEX = "https://download.pytorch.org/whl/"


def resolve_device(device: str | int | torch.device) -> torch.device:
    """`"cpu"`, `"cuda"`, `"cuda:1"`, a torch.device, or an index as transformers' pipelines take it
    (-1: the CPU; 0, 1, ...: that GPU)."""
    parsed = _parse(device)
    if parsed.type == "cuda":
        _check_cuda(device, parsed)
    elif parsed.type != "cpu":  # mps, xpu, meta...: torch's own error would come from deep inside `.to()`
        raise DeviceError(f"device={device!r}: coulisse runs on the CPU or a CUDA GPU, not on {parsed.type}; pass "
                          "device='cpu' (or -1), or 'cuda' / 'cuda:N' with a CUDA build of torch.")
    return parsed


def resolve_device_map(device_map: str | dict | None) -> torch.device:
    """transformers' `device_map`, for a model that runs whole on one device: None (the CPU, coulisse's
    default), a device ("cpu", "cuda:0", 0), "auto" / "balanced" / "sequential" (the first GPU torch
    sees, else the CPU, where accelerate would put a model this small), or a dict that maps every
    module to one device. A map that splits the model across devices is refused."""
    if device_map is None:
        return torch.device("cpu")
    if isinstance(device_map, dict):
        targets = {str(_parse(d)) for d in device_map.values()}
        if len(targets) != 1:
            raise DeviceError(f"device_map={device_map!r} splits the model across {sorted(targets)}; coulisse "
                              "runs a model on one device: pass device='cpu' or device='cuda:0'.")
        return resolve_device(next(iter(device_map.values())))
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return resolve_device("cuda:0" if torch.cuda.is_available() else "cpu")
    return resolve_device(device_map)


def _parse(device: str | int | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if isinstance(device, int) and not isinstance(device, bool):
        if device < -1:
            raise DeviceError(f"device={device}; pass -1 for the CPU or a GPU index (0, 1, ...).")
        if device == -1:
            return torch.device("cpu")
        # A bare index means the machine's accelerator, as in torch; CUDA when there is none, so that the
        # error below says what to install.
        accelerator = torch.accelerator.current_accelerator()
        return torch.device(accelerator.type if accelerator is not None else "cuda", device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"device={device!r} is not a device torch knows; use 'cpu', 'cuda' or 'cuda:N' (N counts from 0)."
        ) from None


def _check_cuda(requested: object, device: torch.device) -> None:
    version = str(torch.__version__)
    if not torch.backends.cuda.is_built():
        release = version.split("+")[0]
        raise DeviceError(
            f"device={requested!r} needs a CUDA build of torch, but the installed torch is {version}, built "
            f"without CUDA. Install the CUDA wheels of the same version from PyTorch's own index: "
            f"`pip install torch=={release}+cuXYZ --index-url {WHEEL_INDEX}cuXYZ` (cuXYZ: the CUDA version your "
            f"driver supports, e.g. cu130; {INSTALL_SELECTOR} lists them), or use device='cpu'."
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = "unset" if visible is None else repr(visible)
    if count == 0:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else f"ROCm {torch.version.hip}"
        raise DeviceError(
            f"device={requested!r}, but torch {version} (built with {build}) sees no GPU; check that "
            f"`nvidia-smi` lists one, the driver, and CUDA_VISIBLE_DEVICES (now {visible}), or use device='cpu'."
        )
    if device.index is not None and device.index >= count:
        names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise DeviceError(
            f"device={requested!r}, but torch sees {count} GPU{'s' if count > 1 else ''} ({names}); pass an "
            f"index below {count}, or check CUDA_VISIBLE_DEVICES (now {visible})."
        )
