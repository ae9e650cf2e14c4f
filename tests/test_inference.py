from pathlib import Path

import cv2
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
    expected = torch.sigmoid(
        Pointwise()(torch.from_numpy(image)[None, None].float().div(255).sub(0.485).div(0.229).repeat(1, 3, 1, 1))
    )[0].numpy()
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


def test_stitching_falls_back_to_the_cpu_when_the_device_is_out_of_memory(monkeypatch, caplog):
    import handbone.inference as inference

    image = _image(90, 70)
    expected = predict_probabilities([Pointwise()], image, 32, "cpu", mode="patch")
    real_zeros, calls = torch.zeros, []

    def zeros_without_room_on_the_device(*args, **kwargs):
        # The first allocation on the model's device fails, as on a full GPU.
        if "device" in kwargs and not calls:
            calls.append(kwargs["device"])
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_zeros(*args, **kwargs)

    monkeypatch.setattr(inference.torch, "zeros", zeros_without_room_on_the_device)
    result = predict_probabilities([Pointwise()], image, 32, "cpu", mode="patch")
    assert calls, "the simulated out-of-memory error was never raised"
    assert "stitching on the CPU" in caplog.text
    assert np.abs(result - expected).max() < 1e-6


def test_maps_are_resized_on_the_cpu_when_the_device_is_out_of_memory(monkeypatch, caplog):
    """A test-time scale other than 1 resizes the stitched maps back to the
    image; on a full GPU that resize moves to the CPU (once it moved maps
    stitched on the CPU back to the GPU and failed there)."""
    import handbone.inference as inference

    image = _image(90, 70)
    expected = predict_probabilities([Pointwise()], image, 32, "cpu", mode="patch", scales=(1.5,))
    real_interpolate, calls = inference.F.interpolate, []

    def interpolate_without_room_on_the_device(tensor, *args, **kwargs):
        if kwargs.get("size") == (90, 70) and not calls:
            calls.append(tensor.shape)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_interpolate(tensor, *args, **kwargs)

    monkeypatch.setattr(inference.F, "interpolate", interpolate_without_room_on_the_device)
    result = predict_probabilities([Pointwise()], image, 32, "cpu", mode="patch", scales=(1.5,))
    assert calls, "the simulated out-of-memory error was never raised"
    assert "resizing on the CPU" in caplog.text
    assert np.abs(result - expected).max() < 1e-6


def _tiny_checkpoint(path, input_mode="patch", input_size=64, **trained_on):
    """A checkpoint as training writes it: trained on config.yaml's
    preprocess options and classes.py's classes unless ``trained_on`` says
    otherwise (a value of None leaves the field out, as older checkpoints)."""
    from handbone import config
    from handbone.classes import CLASSES
    from handbone.model import build_model, save_checkpoint

    torch.manual_seed(0)
    spec = {
        "arch": "Unet",
        "encoder": "tu-mobilenetv3_small_050",
        "encoder_weights": None,
        "kwargs": {"decoder_channels": [16, 16, 8, 8, 8]},
    }
    meta = {"model": spec, "input_size": input_size, "input_mode": input_mode}
    meta |= {"preprocess": config.default("preprocess"), "classes": list(CLASSES)}
    meta = {key: value for key, value in {**meta, **trained_on}.items() if value is not None}
    save_checkpoint(path, build_model(spec).eval(), meta)
    return path


def _write_png_modes(folder):
    """One PNG per mode the data could hold, each of an odd size."""
    from PIL import Image

    rng = np.random.default_rng(1)
    sizes = {}
    gray = rng.integers(0, 256, (75, 51), dtype=np.uint8)
    Image.fromarray(gray).save(folder / "gray.png")
    sizes["gray.png"] = gray.shape
    wide = (rng.integers(0, 65536, (33, 140))).astype(np.uint16)
    cv2.imwrite(str(folder / "gray16.png"), wide)
    sizes["gray16.png"] = wide.shape
    Image.fromarray(gray).convert("P").save(folder / "palette.png")
    sizes["palette.png"] = gray.shape
    (folder / "sub").mkdir()
    rgb = rng.integers(0, 256, (97, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "sub" / "rgb.png")
    sizes["sub/rgb.png"] = rgb.shape[:2]
    rgba = rng.integers(0, 256, (20, 21, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "sub" / "rgba.png")
    sizes["sub/rgba.png"] = rgba.shape[:2]
    return sizes


@pytest.mark.parametrize("input_mode", ["patch", "resize"])
def test_predicting_a_folder_of_odd_sizes_and_png_modes(tmp_path, input_mode):
    from handbone import probmaps
    from handbone.overlays import write_overlays
    from handbone.predict import folder_images, predict_images

    folder = tmp_path / "images"
    folder.mkdir()
    sizes = _write_png_modes(folder)
    checkpoint = _tiny_checkpoint(tmp_path / "model.pt", input_mode)
    images = folder_images(folder)
    assert sorted(name for name, _ in images) == sorted(sizes)
    out = predict_images(
        images,
        [checkpoint],
        tmp_path / "maps",
        {"clahe": {"enabled": True}},
        torch.device("cpu"),
        hflip=True,
        progress=False,
        scales=(0.75, 1.0),
    )
    for name, shape in sizes.items():
        path = out / probmaps.map_filename(name)
        assert probmaps.image_name(path) == name
        assert probmaps.load(path).shape == (29,) + shape
    pictures = write_overlays(
        [(name, path, [out / probmaps.map_filename(name)]) for name, path in images],
        tmp_path / "overlays",
        progress=False,
    )
    assert sorted(p.name for p in pictures.glob("*.png")) == sorted(
        probmaps.map_filename(n)[:-4] + ".png" for n in sizes
    )
    assert cv2.imread(str(pictures / "sub__rgb.png")).shape[0] == 97


def test_checkpoints_trained_on_different_inputs_are_averaged_model_by_model(tmp_path):
    """The mean over models of different input sizes and modes (e.g. the
    models of a round labelling test images) weights every model equally."""
    from handbone import config
    from handbone.inference import predict_probabilities
    from handbone.model import load_checkpoint
    from handbone.predict import load_model_groups, mean_probabilities

    paths = [
        _tiny_checkpoint(tmp_path / "a.pt", "patch", 64),
        _tiny_checkpoint(tmp_path / "b.pt", "resize", 96),
        _tiny_checkpoint(tmp_path / "c.pt", "patch", 64),
    ]
    groups = load_model_groups(paths, torch.device("cpu"), config.default("preprocess"))
    assert sorted((len(models), size, mode) for models, size, mode in groups) == [(1, 96, "resize"), (2, 64, "patch")]
    image = _image(70, 90)
    each = []
    for path in paths:
        model, checkpoint = load_checkpoint(path, torch.device("cpu"))
        each.append(
            predict_probabilities(
                [model], image, checkpoint["input_size"], torch.device("cpu"), mode=checkpoint["input_mode"]
            )
        )
    result = mean_probabilities(groups, image, torch.device("cpu"), hflip=False)
    assert np.abs(result - np.mean(each, axis=0)).max() < 1e-5


def test_a_checkpoint_trained_on_other_inputs_is_refused_naming_both_values(tmp_path):
    from handbone import config
    from handbone.classes import CLASSES
    from handbone.predict import folder_images, predict_images

    folder = tmp_path / "images"
    folder.mkdir()
    _write_png_modes(folder)
    trained = config.default("preprocess")
    assert trained["crop"] == "hand" and trained["clahe"]["clip_limit"] == 2.0
    checkpoint = _tiny_checkpoint(tmp_path / "model.pt")
    given = {"crop": "none", "clahe": {"clip_limit": 3.0}}
    with pytest.raises(ValueError) as refused:
        predict_images(folder_images(folder), [checkpoint], tmp_path / "maps", given, "cpu", progress=False)
    message = str(refused.value)
    assert message.startswith(f"{checkpoint} was trained on other inputs than this prediction gives: ")
    assert "preprocess.clahe.clip_limit: checkpoint 2.0, this prediction 3.0" in message
    assert "preprocess.crop: checkpoint 'hand', this prediction 'none'" in message
    assert "unify_side" not in message and "enabled" not in message  # only what differs
    assert not (tmp_path / "maps").exists()

    swapped = [*CLASSES[:19], CLASSES[20], CLASSES[19], *CLASSES[21:]]
    other_classes = _tiny_checkpoint(tmp_path / "classes.pt", classes=swapped)
    with pytest.raises(ValueError) as refused:
        predict_images(folder_images(folder), [checkpoint, other_classes], tmp_path / "maps", {}, "cpu", progress=False)
    message = str(refused.value)
    assert message.startswith(f"{other_classes} was trained on other inputs")
    assert "class of channel 19: checkpoint 'Trapezoid', this code (classes.py) 'Trapezium'" in message
    assert "class of channel 20: checkpoint 'Trapezium', this code (classes.py) 'Trapezoid'" in message
    assert "preprocess." not in message


def test_a_checkpoint_from_before_the_record_is_used_with_a_warning(tmp_path, caplog):
    from handbone import config
    from handbone.predict import load_model_groups

    old = _tiny_checkpoint(tmp_path / "old.pt", preprocess=None, classes=None)
    with caplog.at_level("WARNING", logger="handbone"):
        groups = load_model_groups([old], torch.device("cpu"), config.default("preprocess"))
    assert [(len(models), size, mode) for models, size, mode in groups] == [(1, 64, "patch")]
    assert f"{old} records no preprocess and no classes" in caplog.text and "retrain it" in caplog.text


def test_out_of_fold_images_are_the_folds_validation_images(tmp_path):
    import pandas as pd

    from handbone.predict import validation_images

    index = pd.DataFrame(
        {
            "split": ["train"] * 4 + ["test"],
            "person_id": ["1", "1", "2", "2", "3"],
            "image_name": ["a.png", "b.png", "c.png", "d.png", "e.png"],
            "image_path": [f"{x}.png" for x in "abcde"],
            "label_path": ["x"] * 4 + [""],
            "height": [8] * 5,
            "width": [8] * 5,
        }
    )
    index.to_csv(tmp_path / "index.csv", index=False)
    folds = pd.DataFrame(
        {
            "image_name": ["a.png", "b.png", "c.png", "d.png"],
            "person_id": ["1", "1", "2", "2"],
            "fold": [0, 0, 1, 1],
            "excluded": [False, True, False, False],
        }
    )
    folds.to_csv(tmp_path / "folds.csv", index=False)
    assert [name for name, _ in validation_images(tmp_path / "index.csv", tmp_path / "folds.csv", 0)] == [
        "a.png",
        "b.png",
    ]
    assert [name for name, _ in validation_images(tmp_path / "index.csv", tmp_path / "folds.csv", 1)] == [
        "c.png",
        "d.png",
    ]
    with pytest.raises(ValueError, match="fold 2"):
        validation_images(tmp_path / "index.csv", tmp_path / "folds.csv", 2)


def test_overlay_colours_exactly_the_predicted_pixels():
    from handbone.overlays import class_colours, masks_of, overlay_image
    from handbone.postprocess import PostprocessParams

    image = np.full((40, 50), 100, np.uint8)
    quantized = np.zeros((29, 40, 50), np.uint8)
    quantized[3, 10:30, 10:30] = 200  # above 0.5
    quantized[5, 0:5, 0:5] = 120  # below 0.5: not drawn
    picture = overlay_image(image, masks_of(quantized))
    assert len(np.unique(class_colours(), axis=0)) == 29
    inside, untouched = picture[20, 20].astype(int), picture[35, 45].astype(int)
    assert (untouched == 100).all() and not (inside == 100).all()
    assert (picture[2, 2] == 100).all()
    assert not masks_of(quantized, PostprocessParams([0.9] * 29, [0] * 29, [False] * 29))[3].any()
    with pytest.raises(ValueError, match="do not match"):
        overlay_image(image[:, :10], masks_of(quantized))


REAL_RADIOGRAPHS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_radiographs"


@pytest.mark.skipif(not REAL_RADIOGRAPHS.is_dir(), reason="real radiographs are not beside the checkout")
def test_real_radiographs_including_palette_files_are_read_and_predicted(tmp_path):
    from PIL import Image

    from handbone import probmaps
    from handbone.data import read_image
    from handbone.predict import predict_images

    palette = REAL_RADIOGRAPHS / "rsna_boneage" / "1578.png"
    assert Image.open(palette).mode == "P"
    luminance = np.asarray(Image.open(palette).convert("L"), dtype=int)
    assert np.abs(read_image(palette).astype(int) - luminance).max() <= 1
    images = [
        ("rsna_boneage/1578.png", palette),
        ("bone_age_examples/0.png", REAL_RADIOGRAPHS / "bone_age_examples" / "0.png"),
    ]
    out = predict_images(
        images,
        [_tiny_checkpoint(tmp_path / "model.pt", "resize")],
        tmp_path / "maps",
        {},
        torch.device("cpu"),
        progress=False,
    )
    assert probmaps.load(out / "rsna_boneage__1578.npz").shape == (29, 2080, 1600)
    assert probmaps.load(out / "bone_age_examples__0.npz").shape == (29, 910, 592)


TINY_UNET = {
    "arch": "Unet",
    "encoder": "tu-mobilenetv3_small_050",
    "encoder_weights": None,
    "kwargs": {"decoder_channels": [16, 16, 8, 8, 8]},
}


def test_the_autocast_precision_is_float16_on_cuda_and_none_on_the_cpu_by_default():
    from handbone.devices import autocast_dtype

    assert autocast_dtype(torch.device("cuda")) is torch.float16  # a V100's half precision; no GPU needed to ask
    assert autocast_dtype("cpu") is None and autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype("cuda", "float32") is None
    assert autocast_dtype("cpu", "bfloat16") is torch.bfloat16 and autocast_dtype("cuda", "bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        autocast_dtype("cpu", "half")


@pytest.mark.parametrize(
    "mode, options",
    [("patch", {"hflip": True, "batch_size": 4}), ("resize", {"hflip": True, "scales": (0.75, 1.0)})],
)
def test_bfloat16_autocast_predicts_the_float32_maps_and_accumulates_in_float32(mode, options):
    """The GPU's mixed-precision path (autocast around the forward passes,
    float32 sums) run on the CPU in bfloat16 with a tiny real network.

    Measured (this test's seed, image and options, on an AMD EPYC CPU): the
    largest absolute difference of a probability is 0.0018 (patch) and
    0.0011 (resize), the mean 2.7e-4 and 1.5e-4, for maps spread over about
    0.25-0.74 (bfloat16 keeps 8 bits of mantissa, about 0.4 % of a logit).
    The bounds, 0.01 and 1e-3, leave a margin of at least 5 and 3.7."""
    from handbone.inference import device_probabilities
    from handbone.model import build_model

    torch.manual_seed(0)
    model = build_model(TINY_UNET).eval()
    outputs = []
    model.register_forward_hook(lambda module, inputs, output: outputs.append(output.dtype))
    image = _image(70, 90)
    exact = predict_probabilities([model], image, 64, "cpu", mode=mode, **options)
    assert set(outputs) == {torch.float32}
    outputs.clear()
    mixed = predict_probabilities([model], image, 64, "cpu", mode=mode, precision="bfloat16", **options)
    assert set(outputs) == {torch.bfloat16}, "the network did not run under bfloat16 autocast"
    assert exact.dtype == mixed.dtype == np.float32 and mixed.shape == (29, 70, 90)
    assert exact.std() > 0.02  # the maps vary: the comparison is not of constants
    difference = np.abs(exact - mixed)
    assert 0 < difference.max() < 0.01 and difference.mean() < 1e-3
    on_device = device_probabilities([model], image, 64, "cpu", mode=mode, precision="bfloat16", **options)
    assert on_device.dtype == torch.float32 and np.array_equal(on_device.numpy(), mixed)
    # The CPU's default (auto) is float32 with no autocast: the numbers of before.
    assert np.array_equal(
        predict_probabilities([model], image, 64, torch.device("cpu"), mode=mode, precision="float32", **options),
        exact,
    )


def test_channels_last_only_for_batch_norm_conv_nets_and_it_predicts_the_same_maps():
    from handbone.model import build_model, channels_last_suits, to_device

    torch.manual_seed(0)
    unet = build_model(TINY_UNET).eval()
    assert channels_last_suits(unet)
    assert channels_last_suits(build_model({"arch": "DeepLabV3Plus", "encoder": "resnet18"}))
    # Instance norm (the nnU-Net-style DynUNet), layer norm (Swin, SegFormer): the default layout.
    nnunet = {"arch": "nnUNet", "kwargs": {"base_features": 8, "max_features": 32}}
    assert not channels_last_suits(build_model(nnunet, 64))
    assert not channels_last_suits(build_model({"arch": "UPerNet", "encoder": "tu-swin_tiny_patch4_window7_224"}, 64))
    assert not channels_last_suits(build_model({"arch": "Segformer", "encoder": "mit_b0"}))
    # The CPU keeps the default layout; a channels-last network (as on CUDA) gives the same maps.
    assert to_device(unet, "cpu").encoder.model.conv_stem.weight.is_contiguous()
    image = _image(70, 90)
    expected = predict_probabilities([unet], image, 64, "cpu", mode="patch", hflip=True)
    unet = unet.to(memory_format=torch.channels_last)
    assert unet.encoder.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    result = predict_probabilities([unet], image, 64, "cpu", mode="patch", hflip=True)
    assert result.flags["C_CONTIGUOUS"] and np.abs(result - expected).max() < 1e-5
