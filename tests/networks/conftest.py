"""The shared network tester: the checks every network in ``networks/`` must pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class NetworkTester:
    """Output shapes, gradients, purity and parameter counts of a network."""

    @staticmethod
    def count_parameters(module: nn.Module) -> int:
        """Number of scalar parameters, the figure papers report."""
        return sum(parameter.numel() for parameter in module.parameters())

    @staticmethod
    def forward_backward(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One training-mode step; asserts a finite gradient reaches every parameter.

        Returns:
            The outputs, as a tuple even when the network returns one tensor.
        """
        net.train()
        net.zero_grad(set_to_none=True)
        outputs = net(x)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        for output in outputs:
            assert torch.isfinite(output).all()
        sum(output.square().mean() for output in outputs).backward()
        for name, parameter in net.named_parameters():
            assert parameter.grad is not None, f"{name} received no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        return outputs

    @classmethod
    def check_segmentation(
        cls, net: nn.Module, input_shape: tuple[int, ...], num_classes: int
    ) -> tuple[torch.Tensor, ...]:
        """Forward + backward on random input; every output is (B, num_classes, *spatial)."""
        torch.manual_seed(0)
        outputs = cls.forward_backward(net, torch.randn(input_shape))
        for output in outputs:
            assert output.shape == (input_shape[0], num_classes, *input_shape[2:])
        return outputs

    @staticmethod
    def check_pure(net: nn.Module, input_shape: tuple[int, ...]) -> None:
        """In eval mode, forward returns one tensor, is deterministic and leaves ``net`` alone."""
        net.eval()
        x = torch.randn(input_shape)
        state = {key: value.clone() for key, value in net.state_dict().items()}
        attributes = dict(vars(net))
        with torch.no_grad():
            first, second = net(x), net(x)
        assert isinstance(first, torch.Tensor)
        assert torch.equal(first, second)
        assert vars(net).keys() == attributes.keys()
        assert all(vars(net)[key] is value for key, value in attributes.items())
        for key, value in net.state_dict().items():
            assert torch.equal(value, state[key]), f"forward changed {key}"


@pytest.fixture
def tester() -> type[NetworkTester]:
    """The shared network checks."""
    return NetworkTester
