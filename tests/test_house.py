"""The house rules, checked on the source: import direction, declared hooks, one owner per
run-folder file name, LightningModules only in ``lightning_modules/``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytorch_lightning as pl

from tests.conftest import REPO

# Lower layers never import higher ones: core ← networks, losses ← datamodules ← evaluation ←
# lightning_modules ← callbacks ← cli. networks and losses share a layer and ignore each other.
LAYERS = {
    "core": 0,
    "networks": 1,
    "losses": 1,
    "datamodules": 2,
    "evaluation": 3,
    "lightning_modules": 4,
    "callbacks": 5,
    "cli": 6,
}


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imported_packages(path: Path) -> set[str]:
    """The suite's packages a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in LAYERS}
    return found


def test_packages_import_only_lower_layers():
    wrong = []
    for package, layer in LAYERS.items():
        for path in _sources(package):
            for imported in _imported_packages(path) - {package}:
                if LAYERS[imported] >= layer:
                    wrong.append(f"{path.relative_to(REPO)} imports {imported}")
    assert wrong == []


def test_the_import_check_sees_an_upward_import(tmp_path):
    # The check above must be able to fail: a function-level import of a higher layer counts.
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from cli.lightning import main\n    import callbacks.seeding\n")
    assert _imported_packages(path) == {"cli", "callbacks"}


def test_lightning_modules_holds_only_lightning_modules():
    """Every class defined in lightning_modules/ is a LightningModule or a value it returns."""
    import dataclasses
    import importlib

    for path in _sources("lightning_modules"):
        module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue  # imported, not defined here
            assert issubclass(cls, pl.LightningModule) or dataclasses.is_dataclass(cls), name


# String arguments of getattr/hasattr that are not hooks: third-party attributes read
# defensively, and lookups of the suite's own tables.
_ALLOWED_NAMED_LOOKUPS = {
    ("cli/runs.py", "rank"),  # rank_zero_only.rank, set by Lightning's launcher
    ("cli/parse_errors.py", "_subcommands_action"),  # jsonargparse's subcommand parsers
    ("cli/parse_errors.py", "_name_parser_map"),
}


def test_no_hook_is_found_by_getattr_on_a_name():
    found = []
    for package in LAYERS:
        for path in _sources(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                if node.func.id not in ("getattr", "hasattr") or len(node.args) < 2:
                    continue
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    key = (path.relative_to(REPO).as_posix(), name.value)
                    if key not in _ALLOWED_NAMED_LOOKUPS:
                        found.append(f"{key[0]}:{node.lineno} {node.func.id}(…, {name.value!r})")
    assert found == []


# The names of a run folder's files; only core/run_layout.py may spell them.
_RUN_FILE_NAMES = (
    "config.yaml", "split.json", "metrics.csv", "last.ckpt", "fit_done.json", "wandb_run_id",
    "val_cases_last.csv", "val_cases_best.csv", "val_postprocessing_last.csv",
    "val_postprocessing_best.csv", "test_cases.csv", "predict_cases.csv",
    "curves.png", "dwi_samples", "cv_config.yaml", "predict_config.yaml", "folds.csv",
    "cases_oof.csv", "summary.json", "report.md", "dice_boxplot.png", "curves_all.png",
    "hpc_ckpt_", "checkpoints", "submitit", "comparison.md", "comparison.json",
    "comparison_metrics.csv", "comparison_cases.csv", "comparison_cases.png",
    "comparison_ranks.png", "comparison.csv", "comparison.png",
)  # fmt: skip


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """The string literals of a module, docstrings left out."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


def _names_a_run_file(text: str) -> bool:
    """Whether a string is a file name or path (no spaces: not prose) naming a run's file."""
    if not text or any(c.isspace() for c in text):
        return False
    segments = text.split("/")
    return any(
        segment == name or (name.endswith("_") and segment.startswith(name))
        for segment in segments
        for name in _RUN_FILE_NAMES
    )


def test_every_run_folder_file_name_is_spelled_once():
    owner = REPO / "core" / "run_layout.py"
    spelled = []
    for package in LAYERS:
        for path in _sources(package):
            if path == owner:
                continue
            for node in _string_constants(ast.parse(path.read_text())):
                if _names_a_run_file(node.value):
                    spelled.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert spelled == []
    assert _names_a_run_file("fold0/split.json") and _names_a_run_file("hpc_ckpt_*.ckpt")
    assert not _names_a_run_file("see the fold's split.json for its cases")
    owner_text = owner.read_text()
    assert all(name in owner_text for name in _RUN_FILE_NAMES)
