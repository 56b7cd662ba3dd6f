"""The commands' error policy (cli/errors.py): which process prints a user error."""

import pytest

from cli.errors import report_user_error
from core.errors import ConfigurationError, ConfigurationErrorOnEveryRank

_RANK_VARIABLES = ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID")


@pytest.mark.parametrize(
    "error, environment, printed",
    [
        (ConfigurationErrorOnEveryRank("alike"), {}, True),
        (ConfigurationErrorOnEveryRank("alike"), {"LOCAL_RANK": "0", "SLURM_PROCID": "0"}, True),
        (ConfigurationErrorOnEveryRank("alike"), {"LOCAL_RANK": "1"}, False),
        (ConfigurationErrorOnEveryRank("alike"), {"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
        (ConfigurationError("this rank's own"), {"LOCAL_RANK": "1"}, True),
    ],
)
def test_an_error_every_rank_raises_is_printed_by_the_first_only(
    monkeypatch, capsys, error, environment, printed
):
    for name in _RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    wrapped = RuntimeError("Lightning's wrapper")
    wrapped.__cause__ = error
    assert report_user_error(wrapped) is True  # a user error either way: exit status 2
    assert capsys.readouterr().err == (f"error: {error}\n" if printed else "")
