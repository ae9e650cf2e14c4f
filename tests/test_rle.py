import numpy as np
import pytest

from handbone import rle


def test_empty_mask_is_empty_string():
    assert rle.encode(np.zeros((4, 5), np.uint8)) == ""
    assert rle.decode("", (4, 5)).sum() == 0


def test_full_mask_is_one_run():
    assert rle.encode(np.ones((4, 5), np.uint8)) == "1 20"


def test_first_and_last_pixel():
    mask = np.zeros((3, 4), np.uint8)
    mask[0, 0] = 1
    mask[2, 3] = 1
    assert rle.encode(mask) == "1 1 12 1"


def test_runs_continue_across_rows_row_major():
    mask = np.zeros((3, 4), np.uint8)
    mask[0, 3] = 1  # last pixel of row 0 (index 3) ...
    mask[1, 0] = 1  # ... runs on into the first pixel of row 1 (index 4)
    mask[1, 2] = 1  # a single pixel (index 6)
    assert rle.encode(mask) == "4 2 7 1"


def test_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 3), (64, 48), (129, 257)]:
        mask = (rng.random(shape) > 0.6).astype(np.uint8)
        assert np.array_equal(rle.decode(rle.encode(mask), shape), mask)


def test_encode_accepts_bool_and_nonzero_values():
    mask = np.array([[0, 3], [True, 0]])
    assert rle.encode(mask) == "2 2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3", "odd number"),
        ("a 2", "not an integer"),
        ("0 2", "start below 1"),
        ("1 0", "length below 1"),
        ("5 3 6 1", "overlap"),
        ("19 3", "past the image"),
    ],
)
def test_parse_rejects_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        rle.parse(text, size=20)


def test_encoding_a_crop_equals_encoding_the_full_mask():
    rng = np.random.default_rng(1)
    for shape, (top, bottom, left, right) in [((9, 11), (2, 7, 3, 9)), ((6, 5), (1, 6, 0, 5)), ((8, 8), (0, 8, 0, 8))]:
        for _ in range(20):
            mask = np.zeros(shape, np.uint8)
            mask[top:bottom, left:right] = rng.random((bottom - top, right - left)) > 0.4
            assert rle.encode_box(mask[top:bottom, left:right], top, left, shape[1]) == rle.encode(mask)
            assert np.array_equal(rle.decode(rle.encode(mask), shape), mask)
