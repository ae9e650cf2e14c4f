import numpy as np
import pytest
import torch

from handbone.inference import gaussian_weights, predict_probabilities, window_starts


class Pointwise(torch.nn.Module):
    """A 'model' whose output at a pixel depends only on that pixel: the
    same under flips, windows and blending, so any difference is a bug."""

    def forward(self, batch):
        return (batch[:, :1] * 2.0).repeat(1, 29, 1, 1)


class LeftRight(torch.nn.Module):
    """Not flip-invariant: the output is the x coordinate."""

    def forward(self, batch):
        x = torch.linspace(-3, 3, batch.shape[-1]).expand(batch.shape[0], 29, batch.shape[-2], -1)
        return x.clone()


def _image(height, width):
    return np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)


def test_gaussian_weights_peak_in_the_centre_and_are_symmetric():
    weights = gaussian_weights(64)
    assert weights.shape == (64, 64)
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.T)
    assert weights[31:33, 31:33].min() > 0.99 and 0 < weights[0, 0] < 0.01


def test_windows_cover_the_image_and_end_flush():
    assert window_starts(100, 64, 32) == [0, 32, 36]
    assert window_starts(50, 64, 32) == [0]


@pytest.mark.parametrize("shape", [(97, 131), (64, 64), (40, 200)])
def test_sliding_window_of_a_pointwise_model_equals_the_model(shape):
    image = _image(*shape)
    expected = torch.sigmoid(Pointwise()(torch.from_numpy(image)[None, None].float().div(255).sub(0.485).div(0.229).repeat(1, 3, 1, 1)))[0].numpy()
    for hflip in (False, True):
        result = predict_probabilities([Pointwise()], image, 64, "cpu", hflip=hflip, mode="patch", batch_size=3)
        assert result.shape == (29,) + shape
        assert np.abs(result - expected).max() < 1e-5


def test_flip_tta_maps_predictions_back():
    image = _image(64, 64)
    plain = predict_probabilities([LeftRight()], image, 64, "cpu", mode="patch")
    flipped = predict_probabilities([LeftRight()], image, 64, "cpu", hflip=True, mode="patch")
    assert plain[:, :, 0].max() < 0.1 and plain[:, :, -1].min() > 0.9
    # The flipped view's ramp, flipped back, runs the other way; as
    # sigmoid(x) + sigmoid(-x) = 1, the average is 0.5 everywhere. Without
    # the flip back it would equal the plain map.
    assert np.abs(flipped - 0.5).max() < 1e-5


def test_scales_average_to_the_original_resolution():
    image = _image(96, 80)
    result = predict_probabilities([Pointwise()], image, 64, "cpu", mode="patch", scales=(0.5, 1.0, 1.5))
    assert result.shape == (29, 96, 80)
    resized = predict_probabilities([Pointwise()], image, 64, "cpu", mode="resize", scales=(0.8, 1.0, 1.5))
    assert resized.shape == (29, 96, 80)
