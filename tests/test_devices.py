"""Device rules: one place decides the default device/dtype and refuses devices that do not exist."""

import pytest
import torch

from seesr.runtime.devices import available_devices, default_device, resolve_device
from seesr.errors import ConfigError


def test_default_and_cpu() -> None:
    assert resolve_device(None) == default_device()
    assert resolve_device("auto") == default_device()
    assert resolve_device("CPU") == torch.device("cpu")
    assert "cpu" in available_devices()


@pytest.mark.parametrize("name", ["banana", "cuda:x", "xla"])
def test_unknown_device_is_a_config_error_naming_what_exists(name: str) -> None:
    with pytest.raises(ConfigError, match="this machine has: cpu"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu() -> None:
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        resolve_device("cuda:1")
