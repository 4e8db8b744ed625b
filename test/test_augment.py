"""Photometric augmentation levels (training.augment): determinism, range, input untouched, JPEG."""
import numpy as np
import pytest
import torch

from featmap_ros.errors import InputError
from featmap_ros.training.augment import JPEG_QUALITY, LEVELS, jpeg_recompress, photometric_augment


def _crops(b=4, c=3, s=16):
    x = torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(0))
    return x if c == 3 else x * 2 - 1


@pytest.mark.parametrize("level", LEVELS)
def test_levels_are_deterministic_in_range_and_leave_the_input(level):
    x = _crops()
    before = x.clone()
    a = photometric_augment(x, torch.Generator().manual_seed(1), level)
    b = photometric_augment(x, torch.Generator().manual_seed(1), level)
    assert torch.equal(x, before)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    if level != "none":
        assert not torch.equal(a, photometric_augment(x, torch.Generator().manual_seed(2), level))


def test_existing_levels_keep_their_values():
    # recorded before ``simreal`` was added: configs using photometric/strong train as before
    x, d = _crops(), _crops(2, 1)
    want = {("photometric", 3): (1578.0812655533664, [0.5865543484687805, 0.8115663528442383, 0.23555122315883636]),
            ("photometric", 1): (-2.1465258123353124, [0.01173652894794941, 0.5461118817329407, -0.7982836365699768]),
            ("strong", 3): (1593.9807782779098, [0.39539453387260437, 0.4917888939380646, 0.4308173954486847]),
            ("strong", 1): (-1.3460137471556664, [0.030959878116846085, 0.5557802319526672, -0.7735221982002258])}
    for (level, c), (total, first) in want.items():
        y = photometric_augment(x if c == 3 else d, torch.Generator().manual_seed(1), level)
        assert float(y.double().sum()) == pytest.approx(total, rel=1e-6)
        np.testing.assert_allclose(y[0, 0, 0, :3].numpy(), first, atol=1e-6)


def test_simreal_differs_from_strong_and_handles_depth():
    x = _crops(8, 3, 32)
    s = photometric_augment(x, torch.Generator().manual_seed(1), "strong")
    r = photometric_augment(x, torch.Generator().manual_seed(1), "simreal")
    assert not torch.allclose(s, r)
    d = _crops(2, 1)
    y = photometric_augment(d, torch.Generator().manual_seed(1), "simreal")
    assert torch.equal(y, photometric_augment(d, torch.Generator().manual_seed(1), "strong"))  # depth: as strong


def test_simreal_blurs_a_sharp_edge():
    x = torch.zeros(16, 3, 32, 32)
    x[..., 16:] = 1.0
    y = photometric_augment(x, torch.Generator().manual_seed(0), "simreal")
    # a blur (or JPEG ringing) puts intermediate values beside the edge of most crops
    edge = y[:, :, 8:24, 14:18]
    assert ((edge > 0.15) & (edge < 0.85)).float().mean() > 0.1


def test_jpeg_recompress_known_behaviour():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(128, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
    before = img.copy()
    hi, lo = jpeg_recompress(img, JPEG_QUALITY[1]), jpeg_recompress(img, JPEG_QUALITY[0])
    assert np.array_equal(img, before)
    assert hi.shape == img.shape and hi.dtype == np.uint8
    err = lambda a: np.abs(a.astype(float) - img).mean()  # noqa: E731
    assert 0 < err(hi) < err(lo)
    # channel order kept (RGB in, RGB out)
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    out = jpeg_recompress(red, 50)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 20


def test_bad_input():
    with pytest.raises(InputError, match="unknown level 'extreme'"):
        photometric_augment(_crops(), torch.Generator(), "extreme")
    with pytest.raises(InputError, match="quality"):
        jpeg_recompress(np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(InputError, match="uint8"):
        jpeg_recompress(np.zeros((8, 8, 3), np.float32), 50)
