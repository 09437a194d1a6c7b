"""The backend/device/dtype rule both nodes check before a load (task_supplementor/devices.py)."""

from __future__ import annotations

import pytest

from task_supplementor.devices import check_load_choices, resolve_auto

BACKENDS = ("native", "hf-official")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_one_device_forms_are_accepted_everywhere(device):
    check_load_choices("native", BACKENDS, device, "bfloat16", visible_gpus=2)
    check_load_choices("native", BACKENDS, device, "auto", two_devices=True, visible_gpus=2)


def test_two_devices_only_where_the_backend_can_split():
    check_load_choices("native", BACKENDS, "cuda:0,cuda:1", "float16", two_devices=True, visible_gpus=2)
    with pytest.raises(ValueError, match=r"device 'cuda:0,cuda:1' is not auto, cpu, cuda, cuda:N$"):
        check_load_choices("native", BACKENDS, "cuda:0,cuda:1", "float16", visible_gpus=2)


@pytest.mark.parametrize(("device", "visible", "message"), [
    ("cuda", 0, "device 'cuda': no CUDA GPU is visible on this machine"),
    ("cuda:1", 1, "device 'cuda:1': 1 CUDA GPU(s) visible (cuda:0..0) on this machine"),
    ("cuda:0,cuda:1", 1, "device 'cuda:0,cuda:1': 1 CUDA GPU(s) visible"),
])
def test_a_gpu_the_machine_does_not_have_is_refused(device, visible, message):
    with pytest.raises(ValueError) as error:
        check_load_choices("native", BACKENDS, device, "auto", two_devices=True, visible_gpus=visible)
    assert str(error.value).startswith(message)
    check_load_choices("native", BACKENDS, "auto", "auto", two_devices=True, visible_gpus=visible)  # auto: never


@pytest.mark.parametrize(("backend", "device", "dtype", "message"), [
    ("onnx", "cpu", "auto", "backend 'onnx' is not one of native, hf-official"),
    ("native", "gpu", "auto", "device 'gpu' is not auto, cpu, cuda, cuda:N or two of them"),
    ("native", "cpu", "fp16", "dtype 'fp16' is not one of auto, bfloat16, float16, float32"),
])
def test_bad_values_name_the_field_and_what_is_accepted(backend, device, dtype, message):
    with pytest.raises(ValueError) as error:
        check_load_choices(backend, BACKENDS, device, dtype, two_devices=True)
    assert str(error.value).startswith(message)


def test_auto_resolves_to_what_this_machine_has():
    import torch

    device, dtype = resolve_auto("auto", "auto")
    assert (device, dtype) == (("cuda:0", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32"))
    assert resolve_auto("cpu", "bfloat16") == ("cpu", "bfloat16")
