"""GPU requests torch cannot serve: a CPU build, a CUDA build that sees no GPU, an index past the last GPU.
Each is one DeviceError line naming the installed torch and the fix, raised before any model is loaded
(the model below does not even exist)."""

from __future__ import annotations

import pytest
import torch

from coulisse import pipeline
from coulisse.engine.device import resolve_device, resolve_device_map
from coulisse.errors import DeviceError, InputError

MISSING_MODEL = "./no-such-model-folder"
GPU_REQUESTS = ["cuda", 0, "cuda:1", torch.device("cuda", 0)]


def device_error(device) -> str:
    with pytest.raises(DeviceError) as info:
        pipeline("sentiment-analysis", model=MISSING_MODEL, device=device)
    message = str(info.value)
    assert "\n" not in message  # one line, ready for the CLI
    return message


@pytest.fixture
def cuda_build(monkeypatch):
    """torch as a CUDA 13.0 build; the test sets how many GPUs it sees."""
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")

    def gpus(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return gpus


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="this torch is a CUDA build")
@pytest.mark.parametrize("device", GPU_REQUESTS, ids=str)
def test_a_cpu_build_names_itself_and_the_cuda_wheels(device):
    message = device_error(device)
    assert repr(device) in message
    assert f"the installed torch is {torch.__version__}, built without CUDA" in message
    release = str(torch.__version__).split("+")[0]
    assert f"pip install torch=={release}+cuXYZ --index-url https://download.pytorch.org/whl/cuXYZ" in message
    assert "https://pytorch.org/get-started/locally/" in message and "device='cpu'" in message


@pytest.mark.parametrize("device", GPU_REQUESTS, ids=str)
def test_a_cuda_build_without_a_gpu(cuda_build, device):
    cuda_build(0)
    message = device_error(device)
    assert "built with CUDA 13.0" in message and "sees no GPU" in message
    assert "nvidia-smi" in message and "CUDA_VISIBLE_DEVICES (now '0')" in message


@pytest.mark.parametrize(("device", "count", "seen"), [("cuda:1", 1, "1 GPU (cuda:0)"),
                                                        (3, 2, "2 GPUs (cuda:0 to cuda:1)")])
def test_an_index_past_the_last_gpu(cuda_build, device, count, seen):
    cuda_build(count)
    message = device_error(device)
    assert f"torch sees {seen}" in message and f"index below {count}" in message


def test_visible_gpus_pass(cuda_build):
    cuda_build(2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(1) == torch.device("cuda", 1)


@pytest.mark.parametrize("device", ["cpu", -1, torch.device("cpu")], ids=str)
def test_cpu_spellings(device):
    assert resolve_device(device) == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", -2, True])
def test_unknown_devices_are_named(device):
    assert repr(device) in device_error(device) or str(device) in device_error(device)


@pytest.mark.parametrize("device", ["mps", "xpu:0", "meta", torch.device("mps")], ids=str)
def test_devices_coulisse_does_not_run_on_are_refused_by_name(device):
    """An Apple GPU (mps), an Intel GPU (xpu), meta: one DeviceError naming the device and what runs, not
    torch's "PyTorch is not linked with support for mps devices" from inside the first `.to()`."""
    message = device_error(device)
    assert f"not on {torch.device(device).type}" in message and "device='cpu'" in message


@pytest.mark.parametrize("device_map", [None, "cpu", {"": "cpu"}, {"encoder": -1, "classifier": "cpu"}], ids=str)
def test_device_maps_on_one_device(device_map):
    """transformers' device_map for a model that runs whole on the CPU; None (device unset) is the CPU."""
    assert resolve_device_map(device_map) == torch.device("cpu")


def test_a_split_device_map_is_refused():
    with pytest.raises(DeviceError, match="splits the model"):
        resolve_device_map({"encoder": "cpu", "classifier": "cuda:0"})


def test_device_error_is_an_input_error():
    assert issubclass(DeviceError, InputError)


def test_minus_one_runs_on_the_cpu(tf_camembert_dir):
    """transformers' spelling of the CPU loads and classifies."""
    classifier = pipeline("sentiment-analysis", model=str(tf_camembert_dir), device=-1)
    assert classifier.device == torch.device("cpu")
    assert classifier("Bof.")[0]["label"] in {"NEGATIVE", "POSITIVE"}
