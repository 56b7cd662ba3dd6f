"""The prediction writer on its own: one file per case, on the source grid, never overwritten."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from callbacks.prediction_writer import NiftiPredictionWriter
from core.errors import ConfigurationError, DataValidationError
from datamodules.nifti import PredictionTarget
from tests.conftest import run_gloo


class _SourceGrid:
    """A case geometry whose network grid is the source array itself."""

    def to_source(self, volume: np.ndarray) -> np.ndarray:
        return volume


def _trainer(log_dir: Path) -> SimpleNamespace:
    return SimpleNamespace(
        log_dir=str(log_dir),
        is_global_zero=True,
        strategy=SimpleNamespace(barrier=lambda name=None: None),
    )


def _case(name: str, source: Path, target: str) -> tuple[dict, dict]:
    mask = torch.zeros(4, 3, 2, dtype=torch.uint8)
    mask[1, 1, 0] = 1
    batch = {
        "prediction": PredictionTarget(target),
        "geometry": _SourceGrid(),
        "source": str(source),
        "spacing": [1.0, 1.0, 1.0],
    }
    return {"case": name, "mask": mask}, batch


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2), np.int32), np.diag([0.8, 0.8, 10, 1])), path)
    return path


def test_two_cases_with_one_file_name_are_refused_not_overwritten(tmp_path, source):
    # Two case folders holding the same SMIR ids (a copied case) map to one submission file:
    # the second mask would silently replace the first, and the run would report success.
    out = tmp_path / "predictions"
    writer = NiftiPredictionWriter(output_dir=str(out))
    trainer, module = _trainer(tmp_path / "run"), SimpleNamespace()
    writer.on_predict_start(trainer, module)
    prediction, batch = _case("TESTING/case_27", source, "SMIR.strokeseg.346581.nii")
    writer.write_on_batch_end(trainer, module, prediction, None, batch, 0)
    prediction, batch = _case("TESTING/case_29", source, "SMIR.strokeseg.346581.nii")
    with pytest.raises(DataValidationError) as error:
        writer.write_on_batch_end(trainer, module, prediction, None, batch, 1)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"{out / 'SMIR.strokeseg.346581.nii'}: cases TESTING/case_27")
    assert "TESTING/case_29" in first_line and "remove or restore the duplicate" in first_line
    assert not out.exists(), "nothing reaches the evaluator's folder"


def test_distinct_cases_are_written_on_the_source_grid(tmp_path, source):
    out = tmp_path / "predictions"
    writer = NiftiPredictionWriter(output_dir=str(out))
    trainer, module = _trainer(tmp_path / "run"), SimpleNamespace()
    writer.on_predict_start(trainer, module)
    for index, name in enumerate(("SMIR.strokeseg.1.nii", "SMIR.strokeseg.2.nii")):
        prediction, batch = _case(f"TESTING/case_{index + 1}", source, name)
        writer.write_on_batch_end(trainer, module, prediction, None, batch, index)
    writer.on_predict_end(trainer, module)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["SMIR.strokeseg.1.nii", "SMIR.strokeseg.2.nii"]
    image = nib.load(out / written[0])
    assert image.get_data_dtype() == np.uint8 and image.shape == (4, 3, 2)
    np.testing.assert_allclose(image.affine, nib.load(source).affine)


# --- two real processes (gloo): each rank writes its own cases into the one folder ------------


def _predict_on_rank(rank: int, run: Path, source: Path, targets: list[tuple[str, str]]) -> list:
    import torch.distributed as dist

    trainer = SimpleNamespace(
        log_dir=str(run),
        is_global_zero=rank == 0,
        strategy=SimpleNamespace(barrier=lambda name=None: dist.barrier()),
    )
    writer, module = NiftiPredictionWriter(output_dir="predictions"), SimpleNamespace()
    writer.on_predict_start(trainer, module)
    case, name = targets[rank]
    prediction, batch = _case(case, source, name)
    writer.write_on_batch_end(trainer, module, prediction, None, batch, 0)
    writer.on_predict_end(trainer, module)
    dist.barrier()  # rank 0 publishes the folder after the others have left on_predict_end
    return sorted(p.name for p in (run / "predictions").iterdir())


@pytest.mark.slow
def test_two_ranks_cases_named_for_one_file_are_refused_on_every_rank(tmp_path, source):
    """Each rank checks its own cases as it writes; a case on each rank named for one file
    (a copied case folder split across ranks) is caught over the union at the end, by every
    rank, and the evaluator's folder is never published. The same case on two ranks (a
    padded sampler) is one case, not a conflict."""
    clash = [
        ("TESTING/case_27", "SMIR.strokeseg.1.nii"),
        ("TESTING/case_29", "SMIR.strokeseg.1.nii"),
    ]
    outcomes = run_gloo(_predict_on_rank, 2, tmp_path / "clash", source, clash)
    for kind, error in outcomes.values():
        assert kind == "raised" and isinstance(error, DataValidationError), outcomes
        assert "cases TESTING/case_27 and TESTING/case_29 would both be written" in str(error)
    assert not (tmp_path / "clash" / "predictions").exists()

    padded = [("TESTING/case_27", "SMIR.strokeseg.1.nii")] * 2
    outcomes = run_gloo(_predict_on_rank, 2, tmp_path / "padded", source, padded)
    assert outcomes == {rank: ("returned", ["SMIR.strokeseg.1.nii"]) for rank in (0, 1)}


def _start_on_rank(rank: int, out: Path, run: Path) -> str:
    import torch.distributed as dist

    trainer = SimpleNamespace(
        log_dir=str(run),
        is_global_zero=rank == 0,
        strategy=SimpleNamespace(barrier=lambda name=None: dist.barrier()),
    )
    NiftiPredictionWriter(output_dir=str(out)).on_predict_start(trainer, SimpleNamespace())
    return "started"


@pytest.mark.slow
def test_a_non_empty_output_folder_is_refused_on_every_rank(tmp_path):
    """Rank 0 alone refused a non-empty absolute output_dir, leaving the other ranks in the
    staging barrier: they died with gloo's "Connection closed by peer" traceback after the
    one-line error. Every rank now refuses before the barrier."""
    out = tmp_path / "masks"
    out.mkdir()
    (out / "SMIR.strokeseg.1.nii").write_bytes(b"")
    outcomes = run_gloo(_start_on_rank, 2, out, tmp_path / "run")
    for kind, error in outcomes.values():
        assert kind == "raised" and isinstance(error, ConfigurationError), outcomes
        assert str(error).startswith(f"prediction_writer.output_dir {out} is not empty.")
