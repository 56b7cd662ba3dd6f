"""SliceGeometry: source grid → network → source grid, on grids unlike the twins'."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from core.errors import ConfigurationError
from datamodules.geometry import SliceGeometry
from datamodules.nifti import CaseOrientation, write_like

ISLES_AXES, ATLAS_AXES = (2, 0, 1), (2, 1, 0)


def _random_grid(rng: np.random.Generator) -> tuple[tuple[int, int, int], np.ndarray, bool]:
    """A non-square, odd-sized, anisotropic grid with a flipped/permuted affine."""
    shape = tuple(int(n) for n in rng.integers(5, 40, size=3))
    zooms = rng.uniform(0.4, 6.0, size=3)
    permutation = rng.permutation(3)
    signs = rng.choice([-1.0, 1.0], size=3)
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, permutation] * signs * zooms[permutation]
    affine[:3, 3] = rng.uniform(-120, 120, size=3)
    isles_quirk = bool(rng.integers(2))  # identity sform beside the true qform
    return shape, affine, isles_quirk


def _save(data: np.ndarray, affine: np.ndarray, isles_quirk: bool, path: Path) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, 2)
    image.set_sform(np.eye(4) if isles_quirk else affine, 2)
    nib.save(image, str(path))
    return path


@pytest.mark.parametrize("seed", range(12))
def test_label_round_trip_is_exact_and_the_written_file_lies_on_the_source_grid(seed, tmp_path):
    rng = np.random.default_rng(seed)
    shape, affine, quirk = _random_grid(rng)
    source = _save(rng.normal(size=shape).astype(np.float32), affine, quirk, tmp_path / "t1.nii.gz")
    label = (rng.random(shape) < 0.3).astype(np.uint8)  # in the file's stored order
    orientation = CaseOrientation.of(source)  # the case's axes: the closest RAS order
    shape = orientation.shape(shape)
    axes = ISLES_AXES if seed % 2 else ATLAS_AXES
    depth, height, width = (shape[a] for a in axes)
    h0, w0 = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
    h1, w1 = int(rng.integers(h0 + 1, height + 1)), int(rng.integers(w0 + 1, width + 1))
    geometry = SliceGeometry.create(axes, crop=(h0, h1, w0, w1) if seed % 3 else None)
    geometry.check(shape, "case")

    native = geometry.to_slices(orientation.to_case(label))  # (D, H, W)
    assert native.shape == (depth, height, width) == geometry.native_shape(shape)
    network = geometry.label_to_network(native)
    back = geometry.to_native(torch.from_numpy(network).float(), (height, width)).numpy()
    window = geometry.window((height, width))
    inside = np.zeros_like(native, dtype=bool)
    inside[:, window[0] : window[1], window[2] : window[3]] = True
    assert np.array_equal(back[inside], native[inside])  # identity inside the window
    assert not back[~inside].any()  # nothing outside it

    written = write_like(
        geometry.to_source(back.astype(np.uint8)), source, tmp_path / "p.nii.gz", np.uint8
    )
    read, original = nib.load(written), nib.load(source)
    assert read.shape == original.shape
    inside_stored = orientation.to_stored(geometry.to_source(inside))
    assert np.array_equal(np.asarray(read.dataobj), label * inside_stored)
    np.testing.assert_allclose(read.header.get_qform(), original.header.get_qform(), atol=1e-5)
    np.testing.assert_allclose(read.header.get_sform(), original.header.get_sform(), atol=1e-5)
    assert read.header["qform_code"] == original.header["qform_code"]
    assert read.header["sform_code"] == original.header["sform_code"]
    ours, theirs = sitk.ReadImage(str(written)), sitk.ReadImage(str(source))  # the evaluators' view
    assert ours.GetSize() == theirs.GetSize()
    np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-5)


def test_spacing_follows_the_axis_order():
    assert SliceGeometry.create(ISLES_AXES).spacing((0.8, 0.9, 10.0)) == (10.0, 0.8, 0.9)
    assert SliceGeometry.create(ATLAS_AXES).spacing((1.0, 2.0, 3.0)) == (3.0, 2.0, 1.0)


def test_resize_round_trip_keeps_a_blob_in_place():
    geometry = SliceGeometry.create(ATLAS_AXES, crop=(5, 45, 3, 35), size=64)
    native = np.zeros((3, 50, 40), dtype=np.uint8)
    native[:, 15:30, 10:22] = 1
    network = geometry.label_to_network(native)
    assert network.shape == (3, 64, 64)
    back = geometry.to_native(torch.from_numpy(network).float(), (50, 40)).numpy() >= 0.5
    dice = 2 * (back & (native > 0)).sum() / (back.sum() + native.sum())
    assert dice > 0.97
    assert not back[:, :5].any() and not back[:, 45:].any()


def test_a_crop_that_does_not_fit_is_refused_with_the_case_and_sizes():
    geometry = SliceGeometry.create(ATLAS_AXES, crop=(40, 220, 10, 190), size=192)
    geometry.check((197, 233, 189), "real ATLAS grid")  # fits the real 233×197 slices
    with pytest.raises(ConfigurationError, match=r"case_7: .*rows 40:220, cols 10:190 .* 117×99"):
        geometry.check((99, 117, 95), "case_7")  # a 2 mm grid


def test_malformed_settings_are_refused():
    with pytest.raises(ConfigurationError, match="crop must be"):
        SliceGeometry.create(ISLES_AXES, crop=(10, 5, 0, 4))
    with pytest.raises(ConfigurationError, match="4 values"):
        SliceGeometry.create(ISLES_AXES, crop=(1, 2, 3))
    with pytest.raises(ConfigurationError, match="permutation"):
        SliceGeometry.create((0, 0, 1))


def test_context_stack_zero_pads_outside_the_case():
    geometry = SliceGeometry.create(ATLAS_AXES, context=(-2, -1, 0, 1))
    block = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 2, 3, 3), np.float32)
    stacked = geometry.stack(block, np.array([0, 4]))  # (2, 4 * 2, 3, 3)
    assert stacked.shape == (2, 8, 3, 3)
    first = stacked[0].reshape(4, 2, 3, 3)[:, 0, 0, 0]
    last = stacked[1].reshape(4, 2, 3, 3)[:, 0, 0, 0]
    assert first.tolist() == [0, 0, 0, 1]  # offsets -2, -1 fall before the case
    assert last.tolist() == [2, 3, 4, 0]  # offset +1 falls after it
    single = geometry.stack(block[1:5], np.array([1]))  # the rows a training sample reads
    assert single[0].reshape(4, 2, 3, 3)[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert geometry.context_rows(10, 9, 20) == (9, 12)


@pytest.mark.parametrize(
    ("native_hw", "native_spacing"),
    [((56, 48), (2.0, 2.0)), ((112, 100), (1.0, 1.0)), ((40, 64), (0.9, 3.2))],
)
def test_target_spacing_shows_one_blob_at_one_size_and_maps_back_in_place(
    native_hw, native_spacing
):
    """A 30 mm × 20 mm lesion covers the same network pixels whatever the scanner's voxel
    size, and the way back puts it where it was."""
    geometry = SliceGeometry.create(ISLES_AXES, size=(64, 64), target_spacing=2.0)
    height, width = native_hw
    rows = (np.arange(height) + 0.5) * native_spacing[0] - height * native_spacing[0] / 2
    cols = (np.arange(width) + 0.5) * native_spacing[1] - width * native_spacing[1] / 2
    native = np.zeros((2, height, width), dtype=np.uint8)
    native[:, (np.abs(rows) < 15)[:, None] & (np.abs(cols) < 10)[None, :]] = 1
    network = geometry.label_to_network(native, native_spacing)
    assert network.shape == (2, 64, 64)
    assert abs(int(network[0].sum()) - 15 * 10) <= 15 + 10  # 30 × 20 mm at 2 mm: ~150 pixels
    centre = np.argwhere(network[0]).mean(axis=0)
    np.testing.assert_allclose(centre, (31.5, 31.5), atol=1.0)  # centred: padding is centred
    back = geometry.to_native(
        torch.from_numpy(network).float(), native_hw, native_spacing=native_spacing
    )
    back = back.numpy() >= 0.5
    dice = 2 * (back & (native > 0)).sum() / (back.sum() + native.sum())
    assert dice > 0.9


def test_target_spacing_round_trip_is_exact_when_the_case_already_has_it():
    """Native 2 mm voxels, target 2 mm: only the padding (or crop) to the network grid
    happens, and the way back undoes it voxel for voxel."""
    rng = np.random.default_rng(0)
    for native_hw in ((50, 40), (80, 70), (64, 64)):  # padded, cropped, neither
        geometry = SliceGeometry.create(ISLES_AXES, size=64, target_spacing=(2.0, 2.0))
        native = (rng.random((3, *native_hw)) < 0.3).astype(np.uint8)
        network = geometry.label_to_network(native, (2.0, 2.0))
        pixels = geometry.image_to_network(native[:, None].astype(np.float32), (2.0, 2.0))
        assert network.shape == (3, 64, 64) and pixels.shape == (3, 1, 64, 64)
        np.testing.assert_array_equal(network, pixels[:, 0])  # images and labels: same place
        back = geometry.to_native(
            torch.from_numpy(network).float(), native_hw, native_spacing=(2.0, 2.0)
        ).numpy()
        kept = np.zeros(native_hw, dtype=bool)  # what the 64 × 64 grid holds of the case
        r0, c0 = max(native_hw[0] - 64, 0) // 2, max(native_hw[1] - 64, 0) // 2
        kept[r0 : r0 + 64, c0 : c0 + 64] = True
        np.testing.assert_array_equal(back[:, kept], native[:, kept])
        assert not back[:, ~kept].any()


def test_target_spacing_is_part_of_the_cache_key_only_when_set():
    assert "target_spacing" not in SliceGeometry.create(ISLES_AXES, size=64).settings()
    settings = SliceGeometry.create(ISLES_AXES, size=64, target_spacing=1.5).settings()
    assert settings["target_spacing"] == [1.5, 1.5]
    with pytest.raises(ConfigurationError, match="image_size"):
        SliceGeometry.create(ISLES_AXES, target_spacing=2.0)


@pytest.mark.parametrize(
    ("crop", "dtype"),
    [(None, torch.float32), ((3, 40, 2, 29), torch.float32), ((3, 40, 2, 29), torch.bfloat16)],
)
def test_to_native_into_an_output_equals_resizing_then_pasting(crop, dtype):
    """With ``out`` the window is resized straight into it (F.interpolate's kernel with its
    ``out=``, or a copy for another dtype): the values of resizing first and pasting after,
    bit for bit, and zeros outside the window whatever the buffer held."""
    geometry = SliceGeometry.create(ISLES_AXES, size=(16, 12), crop=crop)
    native_hw = (45, 31)
    h0, h1, w0, w1 = geometry.window(native_hw)
    probability = torch.rand(5, 16, 12, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = torch.zeros(5, *native_hw)
    expected[:, h0:h1, w0:w1] = torch.nn.functional.interpolate(
        probability[:, None], size=(h1 - h0, w1 - w0), mode="bilinear", align_corners=False
    )[:, 0].float()
    out = torch.full((5, *native_hw), float("nan"))
    returned = geometry.to_native(probability, native_hw, out=out)
    assert returned.data_ptr() == out.data_ptr()
    assert torch.equal(out, expected)
    if dtype == torch.float32:  # and without an output to fill, the same values
        assert torch.equal(geometry.to_native(probability, native_hw), expected)


def test_to_native_keeps_gradients_and_refuses_an_output_of_another_shape():
    geometry = SliceGeometry.create(ISLES_AXES, size=(16, 12), crop=(3, 40, 2, 29))
    probability = torch.rand(5, 16, 12, requires_grad=True)
    native = geometry.to_native(probability, (45, 31))  # the resize out= cannot differentiate
    native.sum().backward()
    assert probability.grad is not None and probability.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"out is \(3, 45, 31\), the slices need \(5, 45, 31\)"):
        geometry.to_native(probability.detach(), (45, 31), out=torch.empty(3, 45, 31))
