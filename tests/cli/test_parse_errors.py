"""jsonargparse's parse errors as one line, with a "did you mean" where a close name exists;
options are taken in full only."""

from __future__ import annotations

import subprocess

import pytest

from cli.launchers import lightning_command
from cli.parse_errors import summarize_parse_error
from tests.conftest import RECIPES, configs

_KEYS = ["model", "data", "trainer.max_epochs", "trainer.logger", "checkpoint.monitor"]


def test_a_typo_in_the_section_of_a_dotted_key_is_suggested():
    # A config file's misspelt section: `modle:` holding `class_path`.
    summary = summarize_parse_error("Option 'modle.class_path' is not accepted", _KEYS)
    assert summary == "Option 'modle.class_path' is not accepted (did you mean 'model.class_path'?)"
    summary = summarize_parse_error("Option 'trainr.max_epochs' is not accepted", _KEYS)
    assert summary.endswith("(did you mean 'trainer.max_epochs'?)")
    # A whole key that is close wins; nothing close: no suggestion.
    summary = summarize_parse_error("Option 'trainer.max_epoch' is not accepted", _KEYS)
    assert summary.endswith("(did you mean 'trainer.max_epochs'?)")
    assert "did you mean" not in summarize_parse_error("Option 'xyz.abc' is not accepted", _KEYS)


def test_a_misspelt_command_line_option_is_suggested_as_an_option():
    summary = summarize_parse_error("unrecognized arguments: --trainer.max_epocs 3", _KEYS)
    assert summary == (
        "unrecognized arguments: --trainer.max_epocs 3 (did you mean '--trainer.max_epochs'?)"
    )
    summary = summarize_parse_error("unrecognized arguments: --trainr.max_epochs=3", _KEYS)
    assert summary.endswith("(did you mean '--trainer.max_epochs'?)")
    assert "did you mean" not in summarize_parse_error("unrecognized arguments: --xyz 1", _KEYS)


@pytest.mark.slow
def test_an_abbreviated_option_is_refused_with_the_full_one_and_the_commands_own_name(tmp_path):
    # As lightning-cv starts it (`python -m cli.lightning`): an unambiguous prefix was taken for
    # the option it begins, and the help to run was `lightning.py fit --help`.
    args = [*configs(*RECIPES["isles22_demo"].configs), "--trainer.max_epoch", "3"]
    result = subprocess.run(
        lightning_command("fit", *args, "--print_config"), cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    first, second = result.stderr.strip().splitlines()
    assert first == (
        "error: unrecognized arguments: --trainer.max_epoch 3 "
        "(did you mean '--trainer.max_epochs'?)"
    )
    assert second.startswith("`lightning fit --help` lists the accepted options")
