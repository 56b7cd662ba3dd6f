import numpy as np
import pytest

from datamodules.normalization import normalize_channels


def test_zscore_over_the_mask_and_clipping_only_where_asked():
    rng = np.random.default_rng(0)
    image = rng.normal(10.0, 2.0, size=(2, 40, 40)).astype(np.float32)
    image[:, :2] = 500.0  # a bright tail: skull in the CT, the lesion in a perfusion map
    mask = np.ones((40, 40), dtype=bool)
    mask[:, -5:] = False
    out = normalize_channels(image, mask, "zscore", clip=[True, False])
    for channel in out:
        assert channel[mask].mean() == pytest.approx(0.0, abs=1e-4)
        assert channel[mask].std() == pytest.approx(1.0, abs=1e-4)
    assert out[0].max() < 5  # clipped: the tail no longer dominates
    assert out[1].max() > 3 * out[1][2:].max()  # not clipped: the tail stays the tail


def test_minmax_and_none():
    image = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.ones((3, 4), dtype=bool)
    out = normalize_channels(image, mask, "minmax")
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.array_equal(normalize_channels(image, mask, "none"), image)
    with pytest.raises(ValueError, match="normalization must be"):
        normalize_channels(image, mask, "robust")
