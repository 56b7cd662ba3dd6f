"""ISLES 2022 through the ``lightning`` command on a BIDS tree written here, as another tool
would write it (not the suite's twin): two scanner geometries, an oblique sagittal FLAIR on its
own grid, ``_rawdata`` without modality folders for some subjects, masks stored as float32
{0., 1.} one folder deeper, sidecars and stray files. Predictions must land on each case's DWI
grid with its header, under the release's names, where pybids finds them; broken inputs stop
the command with one paragraph naming the file. Each recipe's CPU step is in
``tests/test_recipes.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import RECIPES, configs, isles22_args, run_in_process

SUBJECTS = ("strokecase0003", "strokecase0011", "strokecase0020", "strokecase0042")


def _affine(shape, spacing, flips=(), axes=(0, 1, 2), degrees=0.0, centre=(0.0, 10.0, 5.0)):
    """A scanner-like grid centred at ``centre`` (RAS mm), voxel axis i along world axis
    ``axes[i]``, reversed for the axes in ``flips``, tilted by ``degrees`` about x."""
    linear = np.zeros((3, 3))
    for i, axis in enumerate(axes):
        linear[axis, i] = -spacing[i] if i in flips else spacing[i]
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    linear = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre) - linear @ ((np.asarray(shape) - 1) / 2)
    return affine


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(data, None)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def _world(affine: np.ndarray, shape) -> np.ndarray:
    index = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _write_foreign_release(root: Path) -> Path:
    """Four subjects; even ones on a 2 mm LAS grid in the release's layout, odd ones on an
    oblique 1.2 × 1.2 × 5 mm grid in a ``_rawdata`` copy without modality folders."""
    rng = np.random.default_rng(0)
    for number, subject in enumerate(SUBJECTS):
        stem = f"sub-{subject}_ses-0001"
        if number % 2 == 0:
            shape, dwi_affine = (44, 40, 14), _affine((44, 40, 14), (2.0, 2.0, 4.0), flips=(0,))
            raw, deriv = root / "rawdata" / f"sub-{subject}/ses-0001", root / "derivatives"
            dwi_dir, anat_dir, mask_dir = (
                raw / "dwi",
                raw / "anat",
                deriv / f"sub-{subject}/ses-0001",
            )
        else:
            shape = (60, 52, 10)
            dwi_affine = _affine(shape, (1.2, 1.2, 5.0), degrees=8.0)
            raw, deriv = root / "_rawdata" / f"sub-{subject}/ses-0001", root / "_derivatives"
            dwi_dir = anat_dir = raw
            mask_dir = deriv / f"sub-{subject}/ses-0001/lesion"
        xyz = _world(dwi_affine, shape)
        head = (xyz[..., 0] / 40) ** 2 + ((xyz[..., 1] - 10) / 48) ** 2 + (
            xyz[..., 2] / 30
        ) ** 2 < 1
        centre = np.array([rng.uniform(-15, 15), rng.uniform(0, 20), rng.uniform(-5, 5)])
        lesion = head & (np.linalg.norm(xyz - centre, axis=-1) < 9)
        noise = rng.normal(0, 5, shape)
        dwi = np.where(head, 100 + 150 * lesion + noise, 0).astype(np.int16)
        adc = np.where(head, 800 - 450 * lesion + noise, 0).astype(np.float32)
        _save(dwi_dir / f"{stem}_dwi.nii.gz", dwi, dwi_affine)
        _save(dwi_dir / f"{stem}_adc.nii.gz", adc, dwi_affine)
        (dwi_dir / f"{stem}_dwi.json").write_text(json.dumps({"MagneticFieldStrength": 3}))
        # FLAIR: 1.6 mm sagittal slices, tilted, another field of view.
        flair_shape = (40, 64, 56)
        flair_affine = _affine(flair_shape, (1.6, 1.6, 1.6), axes=(1, 2, 0), degrees=-6.0)
        fxyz = _world(flair_affine, flair_shape)
        fhead = (fxyz[..., 0] / 40) ** 2 + ((fxyz[..., 1] - 10) / 48) ** 2 + (
            fxyz[..., 2] / 30
        ) ** 2 < 1
        flesion = fhead & (np.linalg.norm(fxyz - centre, axis=-1) < 9)
        flair = np.where(fhead, 200 + 60 * flesion, 0).astype(np.int16)
        _save(
            anat_dir / f"{stem}_{'FLAIR' if number % 2 == 0 else 'flair'}.nii.gz",
            flair,
            flair_affine,
        )
        _save(mask_dir / f"{stem}_msk.nii.gz", lesion.astype(np.float32), dwi_affine)
        (mask_dir / f"{stem}_snp.png").write_bytes(b"\x89PNG not really")
    (root / "participants.tsv").write_text(
        "participant_id\n" + "".join(f"sub-{s}\n" for s in SUBJECTS)
    )
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "ISLES22", "BIDSVersion": "1.6.0"})
    )
    return root


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    return _write_foreign_release(tmp_path_factory.mktemp("foreign") / "ISLES-2022")


def _args(data: Path, tmp: Path) -> list[str]:
    recipe = RECIPES["isles22_demo"]
    return [*configs(*recipe.configs), *isles22_args(data, tmp), "--data.init_args.num_folds", "2"]


@pytest.mark.slow
def test_a_foreign_release_trains_and_predictions_lie_on_each_dwi_grid(foreign, tmp_path):
    run_in_process("lightning", "fit", *_args(foreign, tmp_path), cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    out = tmp_path / "predict"
    run_in_process(
        "lightning", "predict", "--config", str(run_dir / "config.yaml"), "--ckpt_path", "last",
        "--model.init_args.threshold", "1e-12",  # 1 wherever the network's grid covers the case
        "--prediction_writer.output_dir", str(out / "predictions"),
        cwd=tmp_path,
    )  # fmt: skip
    predictions = out / "predictions"
    import bids  # pybids: how a BIDS-based evaluator finds the masks

    layout = bids.BIDSLayout(str(predictions), derivatives=True, validate=False)
    files = layout.derivatives["strokeseg_prediction"].get(suffix="msk", extension=".nii.gz")
    assert sorted(f.entities["subject"] for f in files) == sorted(SUBJECTS)
    for file in files:
        subject = file.entities["subject"]
        assert Path(file.path).relative_to(predictions).as_posix() == (
            f"derivatives/strokeseg_prediction/sub-{subject}/ses-0001/"
            f"sub-{subject}_ses-0001_msk.nii.gz"
        )
        (dwi,) = foreign.glob(f"*rawdata/sub-{subject}/ses-0001/**/*_dwi.nii.gz")
        written, source = nib.load(file.path), nib.load(dwi)
        assert written.shape == source.shape and written.get_data_dtype() == np.uint8
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        mask = np.asarray(written.dataobj)
        assert set(np.unique(mask)) <= {0, 1} and mask.all()  # a 256 mm grid covers every case
        ours, theirs = sitk.ReadImage(file.path), sitk.ReadImage(str(dwi))  # Grand-Challenge's view
        np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-5)
    # The suite's own predictions inside a copy of the release are never read back as masks.
    inside = foreign.parent / "with-predictions"
    shutil.copytree(foreign, inside)
    shutil.copytree(predictions / "derivatives", inside / "derivatives", dirs_exist_ok=True)
    from datamodules.isles2022_reader import scan_isles2022

    assert len(scan_isles2022(inside, require_masks=True)) == len(SUBJECTS)


@pytest.mark.parametrize("damage", ["truncated", "duplicate"])
def test_broken_inputs_stop_fit_with_one_paragraph_naming_the_file(foreign, tmp_path, damage):
    data = Path(shutil.copytree(foreign, tmp_path / "data"))
    (adc,) = data.glob("rawdata/sub-strokecase0003/ses-0001/dwi/*_adc.nii.gz")
    if damage == "truncated":
        adc.write_bytes(adc.read_bytes()[:200])
        named = adc.name
    else:
        shutil.copy(adc, adc.parent.parent / adc.name)  # a second ADC of the same session
        named = "sub-strokecase0003"
    result = run_in_process("lightning", "fit", *_args(data, tmp_path), cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    # The error paragraph (the cache build's progress bar may come before it).
    first = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert named in first and "Traceback" not in result.stderr
