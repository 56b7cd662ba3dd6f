"""3D networks of the ISLES 2018 papers: Omarov's U-Net (seed 001), 3D U-Net and V-Net (seed 003).

Counts from docs/papers.md §5 (Omarov, Reading A) and §6 (3D U-Net); the classic 3D U-Net's and
V-Net's are measured (papers.md gives none).
"""

import pytest
import torch
from torch import nn

from core.errors import ConfigurationError
from networks import OmarovUNet3D, UNet3DCicek, VNet, classic_unet3d

CASES = [  # (factory, input shape, out channels); small widths and odd-ish sizes keep it fast
    (lambda: OmarovUNet3D(base_width=4), (2, 5, 6, 20, 18), 1),
    (lambda: classic_unet3d(base_width=4), (2, 5, 16, 16, 16), 1),
    (lambda: UNet3DCicek(), (1, 5, 3, 12, 20), 2),
    (lambda: UNet3DCicek(in_channels=1, out_channels=3, pool=2), (1, 1, 7, 16, 12), 3),
    (lambda: VNet(), (1, 5, 3, 20, 18), 2),
]
IDS = ["omarov", "classic", "cicek-221", "cicek-222", "vnet"]


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda: OmarovUNet3D(), 90_311_361),
        (lambda: OmarovUNet3D(base_width=32), 22_584_673),
        (lambda: OmarovUNet3D(base_width=16), 5_649_585),
        # BatchNorm has as many parameters as affine IN: the classic counts are the same.
        (lambda: classic_unet3d(), 90_311_361),
        (lambda: classic_unet3d(base_width=32), 22_584_673),
        (lambda: classic_unet3d(base_width=16), 5_649_585),
        (lambda: UNet3DCicek(in_channels=1, out_channels=3, pool=2), 19_073_795),
        (lambda: UNet3DCicek(), 17_700_930),  # measured: seed 003, (1, 2, 2) up-convs
        (lambda: VNet(), 45_206_890),  # measured: seed 003, 3³ first conv, (1, 2, 2)
        (lambda: VNet(in_channels=1, pool=2), 45_596_330),  # measured
    ],
    ids=[
        "omarov-64",
        "omarov-32",
        "omarov-16",
        "classic-64",
        "classic-32",
        "classic-16",
        "cicek-canonical",
        "cicek-seed003",
        "vnet-seed003",
        "vnet-1ch-222",
    ],
)
def test_parameter_count(tester, factory, expected):
    assert tester.count_parameters(factory()) == expected


def test_omarov_has_23_convs_and_the_paper_layers():
    net = OmarovUNet3D(base_width=4)
    convs = [module for module in net.modules() if isinstance(module, nn.Conv3d)]
    assert len(convs) == 23
    dilations = [conv.dilation[0] for conv in convs if conv.kernel_size == (3, 3, 3)]
    assert dilations[:10] == [1, 1, 1, 1, 1, 2, 1, 2, 1, 2]  # second conv of levels 3–5
    norms = [module for module in net.modules() if isinstance(module, nn.InstanceNorm3d)]
    assert len(norms) == 18 and all(norm.affine for norm in norms)
    assert sum(isinstance(module, nn.LeakyReLU) for module in net.modules()) == 22
    assert isinstance(net.dropout, nn.Dropout3d) and net.dropout.p == 0.5


def test_classic_variant_has_batch_norm_relu_and_no_dilation_or_dropout():
    modules = list(classic_unet3d(base_width=4).modules())
    assert not any(isinstance(m, (nn.InstanceNorm3d, nn.LeakyReLU)) for m in modules)
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in modules)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in modules) == 18
    assert all(m.dilation == (1, 1, 1) for m in modules if isinstance(m, nn.Conv3d))


@pytest.mark.parametrize(("factory", "input_shape", "out_channels"), CASES, ids=IDS)
def test_forward_backward(tester, factory, input_shape, out_channels):
    tester.check_segmentation(factory(), input_shape, num_classes=out_channels)


@pytest.mark.parametrize(("factory", "input_shape", "out_channels"), CASES, ids=IDS)
def test_forward_is_pure_in_eval_mode(tester, factory, input_shape, out_channels):
    tester.check_pure(factory(), (1, *input_shape[1:]))


@pytest.mark.parametrize("net_class", [UNet3DCicek, VNet])
def test_default_pooling_never_touches_the_slice_axis(net_class):
    net = net_class(in_channels=1).eval()
    depths = []
    for module in net.modules():
        if isinstance(module, (nn.MaxPool3d, nn.Conv3d)) and module.stride != (1, 1, 1):
            module.register_forward_hook(lambda m, args, out: depths.append(out.shape[2]))
    with torch.no_grad():
        net(torch.randn(1, 1, 3, 16, 16))
    assert depths and set(depths) == {3}


@pytest.mark.parametrize(
    ("factory", "shape", "training", "setting"),
    [
        # Seed 001's network on a CPU-sized grid: instance norm, in training and in eval mode.
        (lambda: OmarovUNet3D(base_width=2), (2, 5, 8, 16, 16), True, "depth above 16"),
        (lambda: OmarovUNet3D(base_width=2), (1, 5, 2, 12, 16), False, "image_size above 16"),
        # Batch norm, one volume per batch (seed 003's batch 1), training only.
        (lambda: UNet3DCicek(base_width=4, pool=2), (1, 5, 2, 8, 8), True, "batch_size above 1"),
        (lambda: VNet(base_width=4), (1, 5, 1, 16, 16), True, "depth above 1"),
    ],
    ids=["omarov-train", "omarov-eval", "cicek-222-batch1", "vnet-one-slice"],
)
def test_a_volume_pooled_to_one_voxel_is_refused_naming_the_settings(
    factory, shape, training, setting
):
    # Padding to the poolings' multiple leaves a single voxel at the deepest level, which a
    # normalisation layer using the input's statistics cannot normalise: a user error that
    # names the grid and the settings, not torch's ValueError from inside the network.
    net = factory().train(training)
    with pytest.raises(ConfigurationError, match=setting) as error:
        net(torch.randn(shape))
    volume = "×".join(str(n) for n in shape[2:])
    assert str(error.value).startswith(
        f"{type(net).__name__} cannot segment volumes of D×H×W = {volume}"
    )


def test_a_volume_pooled_to_one_voxel_still_runs_where_no_norm_needs_more():
    # Batch norm in eval mode uses its running statistics; two volumes per batch give two values.
    assert UNet3DCicek(base_width=4, pool=2).eval()(torch.randn(1, 5, 2, 8, 8)).shape[2] == 2
    assert VNet(base_width=4).train()(torch.randn(2, 5, 1, 16, 16)).shape[2] == 1


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="base_width ≥ 1"):
        OmarovUNet3D(base_width=0)
    with pytest.raises(ValueError, match="norm='group'"):
        OmarovUNet3D(norm="group")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout=1.0"):
        OmarovUNet3D(dropout=1.0)
    with pytest.raises(ValueError, match="dilated_levels"):
        OmarovUNet3D(dilated_levels=(6,))
    with pytest.raises(ValueError, match=r"pool=\(2, 2\)"):
        UNet3DCicek(pool=(2, 2))
    with pytest.raises(ValueError, match="act='relu'"):
        VNet(act="relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"OmarovUNet3D expects input \(B, 5, D, H, W\)"):
        OmarovUNet3D(base_width=4)(torch.zeros(1, 5, 16, 16))
    with pytest.raises(ValueError, match=r"VNet expects input \(B, 5, D, H, W\)"):
        VNet()(torch.zeros(1, 1, 4, 16, 16))
