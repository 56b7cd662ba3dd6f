"""Start-up of the commands: help and argument errors are answered without importing torch.

Each command runs in a fresh interpreter that reports, after the command has finished, which of
the heavy libraries it imported. Speed itself is measured by ``benchmarks/startup.py``; these
tests keep the imports that make it fast from coming back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.lightning import check_command_line
from core.errors import ConfigurationError

HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "monai", "torchmetrics", "scipy.stats")
_ENTRY_POINTS = {"lightning": "cli.lightning", "lightning-cv": "cli.crossval", "lightning-data": "cli.data"}  # fmt: skip

# Runs one command's entry point as its console script does, then prints (on the real stdout,
# after everything the command printed) the heavy modules it imported.
_PROBE = """
import json, sys
sys.argv = [{prog!r}, *{args!r}]
from {module} import main
try:
    returned = main()
    code = returned if isinstance(returned, int) else 0
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
sys.stdout.flush()
print("\\nHEAVY=" + json.dumps([m for m in {heavy!r} if m in sys.modules]))
sys.exit(code)
"""


def _run(command: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    probe = _PROBE.format(prog=command, args=list(args), module=_ENTRY_POINTS[command], heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    marker = [line for line in result.stdout.splitlines() if line.startswith("HEAVY=")]
    assert marker, f"the probe did not finish:\n{result.stdout}\n{result.stderr}"
    return result, json.loads(marker[-1][len("HEAVY=") :])


@pytest.mark.parametrize(
    "command",
    [
        ("lightning-cv", "--help"),
        ("lightning-cv", "fit", "--help"),
        ("lightning-cv", "report", "--help"),
        ("lightning-cv", "compare", "--help"),
        ("lightning-cv", "predict", "--help"),
        ("lightning-cv", "segment", "--help"),
        ("lightning-cv", "export", "--help"),
        ("lightning-cv", "challenge", "--help"),
        ("lightning-data", "--help"),
        ("lightning-data", "synth", "--help"),
        ("lightning-data", "synth", "isles2018", "--help"),
        ("lightning-data", "synth", "atlas", "--help"),
        ("lightning-data", "synth", "isles2022", "--help"),
        ("lightning-data", "convert-weights", "--help"),
    ],
    ids=" ".join,
)
def test_help_imports_no_heavy_library(command, tmp_path):
    result, heavy = _run(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    assert heavy == []


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("lightning-cv", "report", "runs/missing"), "runs/missing does not exist"),
        (("lightning-cv", "report", "runs/missing", "--bogus"), "report takes no option"),
        (("lightning-cv", "compare", "runs/a"), "needs two different experiment folders"),
        (("lightning-cv", "compare", "runs/a", "runs/b"), "runs/a does not exist"),
        (("lightning-cv", "fit"), "--config"),
        # composed by a `lightning` process of its own, which answers before importing torch
        (("lightning-cv", "fit", "--config", "missing.yaml"), "no such file"),
        (("lightning-cv", "fitt"), "invalid choice"),
        (
            ("lightning-cv", "segment", "runs", "--output", "m.nii.gz"),
            "holds no fold configuration",
        ),
        (
            (
                "lightning-cv",
                "segment",
                "runs",
                "--image",
                "DWI=dwi.nii.gz",
                "--output",
                "m.nii.gz",
            ),
            "no such file",
        ),  # fmt: skip
        (("lightning-cv", "segment", "runs", "--image", "DWI", "--output", "m.mha"), "NAME=FILE"),
        (("lightning-cv", "export", "runs", "--to", "model"), "holds no fold folder"),
        (("lightning-cv", "export", "runs"), "required: --to"),
        (("lightning-cv", "segment", "runs", "--format", "mhd"), "invalid choice: 'mhd'"),
        (
            ("lightning-cv", "challenge", "isles2022", "--model", "runs"),
            "holds no fold configuration",
        ),
        (("lightning-data", "synth", "isles2022"), "DIR"),
        (("lightning-data", "synth", "atlas", "out", "--release", "R3"), "invalid choice"),
        (("lightning-data", "synth", "isles2018", "out", "--cases", "-1"), "non-negative"),
        # Abbreviated or misspelt options of the suite's own commands are named, never taken for
        # the option they resemble nor passed on to `lightning`, which would name them its way.
        (("lightning-cv", "predict", "runs", "--save-prob"), "did you mean --save-probability?"),
        (
            ("lightning-cv", "predict", "runs", "--postprocesing=none"),
            "did you mean --postprocessing",
        ),
        (("lightning-cv", "fit", "--config", "x.yaml", "--gpus-per-nod", "2"), "--gpus-per-node?"),
        (("lightning-data", "synth", "isles2018", "out", "--case", "3"), "did you mean --cases?"),
        (("lightning",), "needs a subcommand"),
        (("lightning", "fitt"), "did you mean 'fit'"),
        (("lightning", "fit", "--config", "experiments/missing.yaml"), "no such file"),
        (("lightning", "predict", "--config=runs"), "is a folder"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else "",
)
def test_an_argument_error_exits_2_without_traceback_or_heavy_imports(command, message, tmp_path):
    (tmp_path / "runs").mkdir()
    result, heavy = _run(*command, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "usage:" not in result.stderr  # the error is the first line, with no banner before it
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and message in error[0], result.stderr
    assert heavy == []


def test_lightning_leaves_what_it_cannot_tell_early_to_lightningcli(tmp_path):
    config = tmp_path / "experiment.yaml"
    config.write_text("trainer: {}\n")
    check_command_line(["--help"])
    check_command_line(["fit", "--help"])
    check_command_line(["fit", "--config", str(config)])
    check_command_line(["fit", "--config", "trainer:\n  max_epochs: 1\n"])  # YAML text
    check_command_line(["fit", "--config={trainer: {max_epochs: 1}}"])
    check_command_line(["--config", str(config)])  # the file may name the subcommand
    with pytest.raises(ConfigurationError, match="no such file"):
        check_command_line(["fit", "--config", str(config), "-c", str(tmp_path / "other.yaml")])
    with pytest.raises(ConfigurationError, match="did you mean 'predict'"):
        check_command_line(["prdict"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: [1, 2\n  b: }\n", "not valid YAML (expected ',' or ']', but got ':' at line 2"),
        (b"", "holds no settings (the file is empty or only comments)"),
        (b"# trainer:\n#   max_epochs: 3\n", "holds no settings"),
        (b"just a string\n", "holds a str ('just a string'), not a mapping of settings"),
        (b"- 1\n- 2\n", "holds a list ('[1, 2]'), not a mapping of settings"),
        (b"\xff\xfe\x00binary", "cannot be read (UnicodeDecodeError)"),
    ],
    ids=["broken", "empty", "comments", "scalar", "list", "binary"],
)
def test_a_config_file_that_is_not_a_yaml_mapping_is_named(content, message, tmp_path):
    config = tmp_path / "delta.yaml"
    config.write_bytes(content)
    with pytest.raises(ConfigurationError) as caught:
        check_command_line(["fit", "--config", str(tmp_path / "ok.yaml"), "--config", str(config)])
    assert "no such file" in str(caught.value)  # the first file is checked first
    (tmp_path / "ok.yaml").write_text("trainer: {}\n")
    with pytest.raises(ConfigurationError) as caught:
        check_command_line(["fit", "--config", str(tmp_path / "ok.yaml"), "--config", str(config)])
    assert str(caught.value).startswith(f"--config {config}: {message}"), caught.value
    result, heavy = _run("lightning", "fit", f"--config={config}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(f"error: --config {config}: {message}")
    assert heavy == []


def test_lazy_package_attributes_resolve():
    import cli.lightning
    import evaluation

    assert evaluation.get_preset.__module__ == "evaluation.metrics"
    assert evaluation.CaseMetrics.__module__ == "evaluation.case_metrics"
    assert "CaseMetrics" in dir(evaluation)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = evaluation.missing  # noqa: B018
    assert cli.lightning.SuiteCLI.__module__ == "cli.suite_cli"
