"""Each module family fits a few steps and validates in bf16-mixed on the device, through the
``lightning fit`` command (its tiny recipe of tests/conftest.py's table)."""

from __future__ import annotations

import pytest

from tests.conftest import run_in_process
from tests.cuda.conftest import assert_finished_with_finite_dice, fold_run, on_device

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("family", ["2d", "3d", "gan"])
def test_a_family_fits_and_validates_in_bf16_on_the_device(family, family_args, device, tmp_path):
    run_in_process("lightning", "fit", *family_args(family), *on_device(device), cwd=tmp_path)
    assert_finished_with_finite_dice(fold_run(tmp_path))
