"""The commands' error policy (cli/errors.py): which process prints a user error."""

import subprocess
import sys
import textwrap

import pytest

from cli.errors import report_user_error
from core.errors import ConfigurationError, ConfigurationErrorOnEveryRank
from tests.conftest import REPO


@pytest.mark.parametrize(
    "error, local_rank",
    [
        (ConfigurationErrorOnEveryRank("alike"), None),
        (ConfigurationErrorOnEveryRank("alike"), "0"),
        # Rank 1, but not started by a parent running this command (SLURM, torchrun): it prints.
        (ConfigurationErrorOnEveryRank("alike"), "1"),
        (ConfigurationError("this rank's own"), "1"),
    ],
)
def test_a_user_error_is_printed(monkeypatch, capsys, error, local_rank):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    if local_rank is not None:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    wrapped = RuntimeError("Lightning's wrapper")
    wrapped.__cause__ = error
    assert report_user_error(wrapped) is True  # a user error either way: exit status 2
    assert capsys.readouterr().err == f"error: {error}\n"


# Rank 0 starts rank 1 from the same command, as Lightning's DDP launcher does; both raise the
# error, rank 0 prints it after `delay` seconds and exits. Rank 1 writes what it printed.
_RANKS = textwrap.dedent(
    """
    import os, subprocess, sys, time
    sys.path.insert(0, {repo!r})
    import cli.errors
    from core.errors import ConfigurationErrorOnEveryRank

    delay, grace, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    cli.errors._FIRST_PROCESS_GRACE_S = grace
    if os.environ.get("LOCAL_RANK", "0") == "0":
        env = {{**os.environ, "LOCAL_RANK": "1"}}
        with open(out, "w") as stderr:
            subprocess.Popen([sys.executable, *sys.argv], env=env, stderr=stderr)
        time.sleep(delay)
        cli.errors.report_user_error(ConfigurationErrorOnEveryRank("alike"))
    else:
        cli.errors.report_user_error(ConfigurationErrorOnEveryRank("alike"))
        sys.stderr.write("rank 1 done\\n")
    """
)


@pytest.mark.parametrize("delay, grace, rank1_prints", [(0.5, 10.0, False), (3.0, 0.3, True)])
def test_a_rank_started_by_rank_0_leaves_the_error_to_it(tmp_path, delay, grace, rank1_prints):
    """Lightning's launcher kills every rank once one exits with an error: a rank above 0 that
    left at once, silent, could take rank 0 down before it printed. It waits for rank 0 to
    exit instead, and prints the error itself only if rank 0 has not exited in time."""
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS.format(repo=str(REPO)))
    out = tmp_path / "rank1.txt"
    env = {"PATH": "/usr/bin:/bin"}
    args = [sys.executable, str(script), str(delay), str(grace), str(out)]
    rank0 = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert rank0.stderr == "error: alike\n"
    for _ in range(200):  # rank 1 may still be waiting or finishing
        if "rank 1 done" in out.read_text():
            break
        subprocess.run(["sleep", "0.05"])
    printed = out.read_text().splitlines()
    assert printed == (["error: alike", "rank 1 done"] if rank1_prints else ["rank 1 done"])
