"""jsonargparse's parse errors as one line, with a "did you mean" where a close name exists."""

from __future__ import annotations

from cli.parse_errors import summarize_parse_error

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
