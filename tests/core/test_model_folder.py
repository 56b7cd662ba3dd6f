"""The manifest of an exported model folder: what is checked before anything is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.model_folder import manifest_of, verify_model_folder
from core.run_layout import ModelFolderLayout


def _model_folder(root: Path) -> ModelFolderLayout:
    """Two folds, the recipe and the summary, with the manifest export writes."""
    folder = ModelFolderLayout(root / "model")
    for k in (0, 1):
        folder.fold(k).root.mkdir(parents=True)
        folder.fold(k).config.write_text(f"fold: {k}\n")
        folder.fold(k).weights.write_bytes(bytes([k]) * 64)
    folder.recipe.write_text("recipe: 1\n")
    folder.summary.write_text("{}")
    files = [p for p in folder.root.rglob("*") if p.is_file()]
    folder.manifest.write_text(manifest_of(folder.root, files, experiment="exp"))
    return folder


def test_an_unchanged_folder_passes_and_junk_beside_it_is_ignored(tmp_path):
    folder = _model_folder(tmp_path)
    (folder.root / ".DS_Store").write_bytes(b"\0")
    (folder.root / "README.txt").write_text("from the lab")
    assert verify_model_folder(folder)["experiment"] == "exp"


def test_a_fold_added_after_the_export_is_refused(tmp_path):
    folder = _model_folder(tmp_path)
    extra = folder.fold(2)
    extra.root.mkdir()
    extra.config.write_text("fold: 2\n")
    extra.weights.write_bytes(b"\1" * 64)
    with pytest.raises(ConfigurationError, match=r"^\S+/fold2/config\.yaml: not in the manifest"):
        verify_model_folder(folder)


@pytest.mark.parametrize("dropped", ["fold1/weights.pt", "summary.json", "*"])
def test_a_manifest_that_no_longer_lists_a_file_prediction_reads_is_refused(tmp_path, dropped):
    # An edited manifest must not let a changed file through unchecked.
    folder = _model_folder(tmp_path)
    manifest = json.loads(folder.manifest.read_text())
    manifest["files"] = (
        {} if dropped == "*" else {k: v for k, v in manifest["files"].items() if k != dropped}
    )
    folder.manifest.write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError, match=r": not in the manifest of the model folder"):
        verify_model_folder(folder)
