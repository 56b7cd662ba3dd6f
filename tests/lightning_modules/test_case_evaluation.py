"""CaseEvaluationModule's logging: Lightning's sync_dist advice is silenced for its keys alone."""

import warnings

from pytorch_lightning.utilities.warnings import PossibleUserWarning

from lightning_modules.case_evaluation import _quiet_sync_dist_advice


def _advice(key: str) -> str:
    return (
        f"It is recommended to use `self.log({key!r}, ..., sync_dist=True)` when logging on "
        "epoch level in distributed setting to accumulate the metric across devices."
    )


def test_the_sync_dist_advice_is_silenced_for_the_gathered_summaries_alone():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_sync_dist_advice(["val/dice", "val/hd"])
        for key in ("val/dice", "val/hd", "val/dice_std", "val/loss", "train/loss"):
            warnings.warn(_advice(key), PossibleUserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        _advice(key) for key in ("val/dice_std", "val/loss", "train/loss")
    ]
