"""The ATLAS experiments (seed 004 D-UNet family, seed 000 VCA-Net) through the ``lightning``
command: slice-level splits, DDP, BIDS predictions the challenge's evaluator reads, crops, a
``kill -9`` during the cache build. Each recipe's one step is in ``tests/test_recipes.py``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import BIN, RECIPES, atlas_args, configs, run_cli, run_in_process


def _tiny_args(name: str, atlas: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    """A recipe of the table on the tiny ATLAS twin (R1.1 layout, a 32×32 window)."""
    recipe = RECIPES[name]
    return [*configs(*recipe.configs), *atlas_args(atlas, tmp, cache), *recipe.tiny]


@pytest.mark.slow
def test_vcanet_slice_level_split_runs_and_records_the_held_out_slices(
    tiny_atlas, shared_cache, tmp_path
):
    args = _tiny_args("vcanet", tiny_atlas, tmp_path, shared_cache)
    args += ["--data.init_args.split_unit", "slice", "--trainer.limit_val_batches", "3"]
    with pytest.warns(UserWarning, match="neighbouring slices of one subject are in training"):
        run_in_process("lightning", "fit", *args, cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    split = json.loads((run_dir / "split.json").read_text())
    assert split["unit"] == "slice" and split["val_slices"]
    with (run_dir / "val_cases_last.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3


@pytest.mark.slow
def test_dunet_demo_with_foreground_sampling_under_two_process_ddp(
    tiny_atlas, shared_cache, tmp_path
):
    # Two processes need real ones (DDP spawns the second rank as a copy of the command).
    args = _tiny_args("dunet_demo", tiny_atlas, tmp_path, shared_cache)
    args += [
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "null",
    ]
    run_cli("lightning", "fit", *args, cwd=tmp_path, timeout=600)
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    split = json.loads((run_dir / "split.json").read_text())
    with (run_dir / "val_cases_last.csv").open() as handle:
        cases = [row["case"] for row in csv.DictReader(handle)]
    assert sorted(cases) == sorted(split["val_cases"])  # every case once across the 2 ranks
    assert (run_dir / "curves.png").is_file()


@pytest.fixture(scope="module")
def tiny_r20(tmp_path_factory):
    """A tiny R2.0 twin with Testing subjects: 40×47×38 voxels, a non-square grid."""
    from datamodules.synth.atlas import write_atlas_twin

    root = tmp_path_factory.mktemp("r20") / "atlas"
    return write_atlas_twin(root, "R2.0", subjects=8, testing_subjects=2, seed=0, size="tiny")


@pytest.fixture(scope="module")
def r20_run(tiny_r20, tmp_path_factory):
    """One D-UNet demo step fitted on the tiny R2.0 twin, shared by the tests that predict with it:
    its fold0 folder (each predict logs into its predict/, and writes masks where it is told)."""
    tmp = tmp_path_factory.mktemp("r20-fit")
    args = _tiny_args("dunet_demo", tiny_r20, tmp) + ["--data.init_args.release", "R2.0"]
    run_in_process("lightning", "fit", *args, cwd=tmp)
    return tmp / "runs" / "dunet_demo" / "fold0"


def _predict_r20(run_dir: Path, out: Path, *extra: str) -> Path:
    """Predict with the fitted run, a threshold of ~0, into ``out/predictions``: the folder."""
    # A threshold of ~0: the mask is 1 exactly where the network sees the slice (the 32×32 window of
    # rows = y 0:32, cols = x 0:32), so its place in the written file shows the orientation.
    run_in_process(
        "lightning",
        "predict",
        "--config",
        str(run_dir / "config.yaml"),
        "--ckpt_path",
        "last",  # a checkpoint *file* would bring its hparams back over the overrides below
        "--model.init_args.threshold",
        "1e-12",
        "--prediction_writer.output_dir",
        str(out / "predictions"),
        *extra,
        cwd=out.parent,
    )
    return out / "predictions"


@pytest.mark.slow
def test_atlas_predictions_are_bids_derivatives_on_the_t1_grid(tiny_r20, r20_run, tmp_path):
    out = _predict_r20(r20_run, tmp_path / "predict")
    masks = sorted(
        out.glob(
            "derivatives/atlas2_prediction/sub-*/ses-1/anat/*_label-L_desc-T1lesion_mask.nii.gz"
        )
    )
    assert len(masks) == 2
    description = json.loads(
        (out / "derivatives/atlas2_prediction/dataset_description.json").read_text()
    )
    assert description["DatasetType"] == "derivative" and description["Name"] == "atlas2_prediction"
    assert (out / "dataset_description.json").is_file()
    for mask in masks:
        subject = mask.name.split("_")[0]
        name = f"{subject}_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"
        (t1,) = (tiny_r20 / "ATLAS_2" / "Testing").glob(f"R*/{subject}/ses-1/anat/{name}")
        written, source = nib.load(mask), nib.load(t1)
        assert written.shape == source.shape == (40, 47, 38)
        np.testing.assert_allclose(written.affine, source.affine)
        expected = np.zeros(source.shape, dtype=np.uint8)
        expected[0:32, 0:32, :] = 1  # x = cols 0:32, y = rows 0:32
        assert np.array_equal(np.asarray(written.dataobj), expected)


@pytest.mark.slow
def test_the_atlas2_container_reads_the_extract_or_its_testing_folder(tiny_r20, r20_run, tmp_path):
    import SimpleITK as sitk

    testing = tiny_r20 / "ATLAS_2" / "Testing"
    written = {}
    for name, given in (("root", tiny_r20), ("testing", testing)):
        out = tmp_path / name
        model = ["--model", str(r20_run)]
        run_in_process(
            "lightning-cv", "challenge", "atlas2", *model, "--input", str(given), "--output",
            str(out), cwd=tmp_path,
        )  # fmt: skip
        masks = sorted(out.glob("derivatives/atlas2_prediction/sub-*/ses-1/anat/*_mask.nii.gz"))
        written[name] = {m.relative_to(out): m.read_bytes() for m in masks}
        assert len(masks) == 2
        for mask in masks:
            subject = mask.name.split("_")[0]
            (t1,) = testing.glob(f"R*/{subject}/ses-1/anat/{subject}_*_T1w.nii.gz")
            image, source = nib.load(mask), nib.load(t1)
            assert image.shape == source.shape and image.get_data_dtype() == np.uint8
            np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
            itk, itk_source = sitk.ReadImage(str(mask)), sitk.ReadImage(str(t1))
            assert itk.GetSize() == itk_source.GetSize()
            assert itk.GetPixelID() == sitk.sitkUInt8
            for get in ("GetOrigin", "GetSpacing", "GetDirection"):
                np.testing.assert_allclose(
                    getattr(itk, get)(), getattr(itk_source, get)(), atol=1e-5
                )
    assert written["testing"] == written["root"]


@pytest.mark.slow
def test_the_atlas2_container_writes_into_a_relative_output_folder(tiny_r20, r20_run, tmp_path):
    """``--output out`` is the working folder's ``out``: it was the temporary ensemble run's,
    deleted with it, and the command exited 0 with no mask written."""
    done = run_in_process(
        "lightning-cv", "challenge", "atlas2", "--model", str(r20_run), "--input",
        str(tiny_r20), "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0
    masks = sorted(
        (tmp_path / "out").glob("derivatives/atlas2_prediction/sub-*/ses-1/anat/*.nii.gz")
    )
    assert len(masks) == 2


@pytest.mark.slow
def test_the_atlas2_type2_container_reads_one_mha_t1_and_writes_its_mask(
    tiny_r20, r20_run, tmp_path
):
    """Type 2 (Grand-Challenge's interface): /input/images/t1-brain-mri/<uuid>.mha → the mask
    /output/images/stroke-segmentation/<uuid>.mha on the T1's grid as SimpleITK reads it, the
    same voxels as the Type 1 (BIDS) mask of that subject."""
    import SimpleITK as sitk

    uuid = "2b7c0e9d-4a1f-4c3e-8d65-0f1e2a3b4c5d"
    t1 = sorted((tiny_r20 / "ATLAS_2" / "Testing").glob("R*/sub-*/ses-1/anat/sub-*_T1w.nii.gz"))[0]
    subject = t1.name.split("_")[0]
    given = tmp_path / "input" / "images" / "t1-brain-mri" / f"{uuid}.mha"
    given.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(t1)), str(given))
    model = ["--model", str(r20_run)]
    run_in_process(
        "lightning-cv", "challenge", "atlas2", *model, "--input", str(tmp_path / "input"),
        "--output", str(tmp_path / "output"), cwd=tmp_path,
    )  # fmt: skip
    mask_file = tmp_path / "output" / "images" / "stroke-segmentation" / f"{uuid}.mha"
    mask, source = sitk.ReadImage(str(mask_file)), sitk.ReadImage(str(given))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == source.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(mask, get)(), getattr(source, get)(), atol=1e-5)
    (result,) = json.loads((tmp_path / "output" / "results.json").read_text())
    assert result["outputs"] == [{"type": "metaio_image", "filename": f"{uuid}.mha"}]

    bids_out = tmp_path / "bids"
    run_in_process(
        "lightning-cv", "challenge", "atlas2", *model, "--input", str(tiny_r20), "--output",
        str(bids_out), cwd=tmp_path,
    )  # fmt: skip
    (type1,) = bids_out.glob(f"derivatives/atlas2_prediction/{subject}/ses-1/anat/*_mask.nii.gz")
    voxels = sitk.GetArrayFromImage(mask).transpose(2, 1, 0)
    assert np.array_equal(voxels, np.asarray(nib.load(type1).dataobj))


def _evaluator_dice(prediction: np.ndarray, truth: np.ndarray, dtype: type = np.float32) -> float:
    """The ATLAS R2.0 evaluator's Dice as docs/datasets.md §3.5 describes it: volumes as its loader
    holds them (float32), clipped to [0, 1], flattened, 2·(p·t) / (Σp + Σt), 1.0 when the
    denominator is 0. ``dtype=np.float64``: the same formula without the float32 rounding."""
    p = np.clip(prediction.astype(dtype).reshape(1, -1), 0, 1)
    t = np.clip(truth.astype(dtype).reshape(1, -1), 0, 1)
    denominator = np.sum(p) + np.sum(t)
    if denominator == 0:
        return 1.0
    return float((2 * (p @ t.T) / denominator).item())


@pytest.mark.slow
def test_the_challenge_evaluator_finds_every_mask_and_scores_it_as_the_suite_did(
    tiny_r20, r20_run, tmp_path
):
    import bids  # pybids, the evaluator's way into a prediction folder

    extra = ["--data.init_args.predict_split", "Training"]
    extra += ["--model.init_args.metrics", "atlas2_challenge"]
    out = _predict_r20(r20_run, tmp_path / "predict", *extra)
    training = tiny_r20 / "ATLAS_2" / "Training"
    subjects = sorted(p.name.removeprefix("sub-") for p in training.glob("R*/sub-*"))
    assert len(subjects) == 8

    # The evaluator opens the folder with pybids, takes the derivative by its pipeline name
    # (pybids: GeneratedBy[0].Name), asks it for every file with suffix "mask", and pairs each
    # with the ground truth of the same subject and session.
    layout = bids.BIDSLayout(str(out), derivatives=True, validate=False)
    files = layout.derivatives["atlas2_prediction"].get(suffix="mask", extension=".nii.gz")
    assert sorted(f.entities["subject"] for f in files) == subjects
    assert all(f.entities["session"] == "1" and f.entities["label"] == "L" for f in files)
    # The evaluator's own call (BIDSLayout's default validate=True) lists the same files.
    strict = bids.BIDSLayout(str(out), derivatives=True).derivatives["atlas2_prediction"]
    assert sorted(f.path for f in strict.get(suffix="mask")) == sorted(f.path for f in files)

    with (out.parent / "predict_cases.csv").open() as handle:
        suite = {row["case"].split("/")[-1]: row for row in csv.DictReader(handle)}
    assert sorted(suite) == [f"sub-{s}" for s in subjects]
    relative_gaps, absolute_gaps, soft = [], [], []
    for file in files:
        subject, session = file.entities["subject"], file.entities["session"]
        pattern = f"R*/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_*_mask.nii.gz"
        (truth_file,) = training.glob(pattern)
        # As the evaluator's loader reads them: get_fdata() into float32 arrays.
        image = file.get_image()
        prediction = np.asarray(image.get_fdata(), dtype=np.float32)
        truth = np.asarray(nib.load(truth_file).get_fdata(), dtype=np.float32)
        assert image.get_data_dtype() == np.uint8 and set(np.unique(prediction)) <= {0.0, 1.0}
        row = suite[f"sub-{subject}"]
        if not set(np.unique(truth)) <= {0.0, 1.0}:
            # sub-r039s002's mask (max 0.01): the evaluator only clips, so it scores this truth
            # softly, where the suite binarises it (> 0). Binarised, the evaluator agrees.
            soft.append(subject)
            volume = float(np.abs(np.sum(prediction) - np.sum(truth)))
            assert volume != float(row["volume_difference"])
            assert _evaluator_dice(prediction, truth) < float(row["dice"]) / 10
            truth = (truth > 0).astype(np.float32)
        ours = float(row["dice"])
        gap = abs(_evaluator_dice(prediction, truth) - ours)
        absolute_gaps.append(gap)
        relative_gaps.append(gap / ours if ours else gap)
        # Without the float32 rounding the two are the same number.
        assert _evaluator_dice(prediction, truth, np.float64) == ours, subject
        volume_difference = float(np.abs(np.sum(prediction) - np.sum(truth)))
        assert volume_difference == float(row["volume_difference"]), subject
    assert soft == ["r039s002"]
    print(
        f"evaluator (float32) Dice vs predict_cases.csv: max |difference| {max(absolute_gaps):.3g},"
        f" max relative {max(relative_gaps):.3g}"
    )
    # Counts below 2**24 are exact in float32; the one rounding is the quotient's, half an ulp:
    # 2**-24 relative. The twin's Dice values are below 0.02, hence below 1e-9 absolute too.
    assert max(relative_gaps) <= 2.0**-24
    assert max(absolute_gaps) <= 1e-9


@pytest.mark.slow
def test_the_papers_crop_on_a_smaller_grid_exits_2_naming_the_case(tiny_atlas, tmp_path):
    args = _tiny_args("dunet", tiny_atlas, tmp_path)
    args += ["--data.init_args.crop", "[40, 220, 10, 190]"]  # D-UNet's window
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    head = result.stderr.strip().splitlines()[0]
    assert head.startswith("error: R1.1/Site")
    assert "rows 40:220, cols 10:190 does not fit its 47×40 slices" in head
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_kill_9_during_the_cache_build_leaves_nothing_after_the_next_run(tmp_path):
    from datamodules.synth.atlas import write_atlas_twin

    twin = write_atlas_twin(tmp_path / "atlas", "R2.0", subjects=3, seed=0, size="full")
    args = configs("dunet.yaml", "dunet_demo.yaml") + [
        "--data.init_args.data_dir",
        str(twin),
        "--data.init_args.cache_dir",
        str(tmp_path / "cache"),
        "--data.init_args.num_folds",
        "3",
        "--data.init_args.num_workers",
        "0",
        "--runs_dir",
        str(tmp_path / "runs"),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.image_size",
        "32",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [str(BIN / "lightning"), "fit", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob("*.tmp-*")):
        assert process.poll() is None and time.monotonic() < deadline, "no cache build seen"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert list((tmp_path / "cache").glob("*.tmp-*")), "killed during the build"
    run_in_process("lightning", "fit", *args, "--overwrite", cwd=tmp_path)
    assert not list((tmp_path / "cache").glob("*.tmp-*"))
    (cache,) = (tmp_path / "cache").iterdir()
    assert (cache / "meta.json").is_file()


@pytest.mark.slow
def test_a_mask_stored_flipped_is_reoriented_and_said_so(tiny_atlas, tmp_path):
    import shutil

    from datamodules.atlas_reader import scan_atlas

    copy = Path(shutil.copytree(tiny_atlas, tmp_path / "atlas"))
    scan = scan_atlas(copy)[0]
    image = nib.load(scan.masks[0])
    data = np.asarray(image.dataobj)
    flip = np.diag([1.0, -1.0, 1.0, 1.0])  # the same lesion, y axis stored reversed
    flip[1, 3] = data.shape[1] - 1
    flipped = nib.Nifti1Image(data[:, ::-1].copy(), image.affine @ flip)
    flipped.set_qform(image.affine @ flip, 1)
    flipped.set_sform(image.affine @ flip, 1)
    nib.save(flipped, scan.masks[0])
    result = run_in_process("lightning", "fit", *_tiny_args("dunet", copy, tmp_path), cwd=tmp_path)
    assert f"{scan.masks[0]}: reoriented onto the grid of {scan.t1}" in result.stdout
