"""Models named in config: segmentation-models-pytorch architectures and an
nnU-Net-style U-Net (MONAI's DynUNet), with pretrained encoder weights read
from a Hugging Face Hub cache that ``handbone fetch-weights`` fills."""

from __future__ import annotations

import argparse
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import config
from .arguments import json_argument, use_weights_cache
from .atomic import atomic_path
from .classes import CLASSES, NUM_CLASSES
from .errors import ConfigError, DataError, MissingInput, MissingWeights

log = logging.getLogger("handbone")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# The arch name of the nnU-Net-style member (not a segmentation-models-pytorch architecture; see architectures()).
NNUNET = "nnUNet"
# Its options (models.<name>.kwargs) and their defaults, nnU-Net's 2D plan:
# features double from 32 up to 512, halving the map until it is 4 pixels.
NNUNET_OPTIONS = {
    "residual": False,
    "deep_supervision": 0,
    "base_features": 32,
    "max_features": 512,
    "min_feature_map": 4,
}
# The arch name of SAM2-UNet (Segment Anything 2's Hiera encoder under a
# U-Net decoder), and its options (models.<name>.kwargs) besides the
# U-Net's own: the paper's training (encoder frozen, a bottleneck adapter
# of adapter_dim features before each Hiera block) or, with adapters:
# false, the whole network fine-tuned.
SAM2_UNET = "SAM2UNet"
SAM2_UNET_OPTIONS = {"adapters": True, "adapter_dim": 32}
SAM2_ENCODER_PREFIX = "tu-sam2_hiera"
# encoder_weights strings that name a local file rather than a library's weights.
LOCAL_WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class HubWeights:
    """The Hugging Face Hub files a pretrained encoder is loaded from.

    ``files``: per needed file, its alternatives (the library takes the
    first one present, e.g. timm prefers model.safetensors).
    """

    repo_id: str
    revision: str | None
    files: tuple[tuple[str, ...], ...]

    def describe(self) -> str:
        return self.repo_id + (f"@{self.revision[:10]}" if self.revision else "")

    def cached(self) -> bool:
        """Whether every needed file is in the hub cache (no network)."""
        from huggingface_hub import try_to_load_from_cache

        return all(
            any(
                isinstance(try_to_load_from_cache(self.repo_id, name, revision=self.revision), str)
                for name in alternatives
            )
            for alternatives in self.files
        )


def is_local_file(weights) -> bool:
    return isinstance(weights, str) and ("/" in weights or weights.endswith(LOCAL_WEIGHTS_SUFFIXES))


def library_weights(spec: dict):
    """encoder_weights as segmentation-models-pytorch takes it: None, True
    (timm encoders: the pretrained tag in the encoder name, or timm's
    default) or a weights name of an smp encoder (``imagenet``, ``ssl``...).
    A local file and null give None (the file is loaded by build_model)."""
    weights, encoder = spec.get("encoder_weights"), str(spec.get("encoder"))
    if weights in (None, False) or is_local_file(weights):
        return None
    if not architecture(spec.get("arch")).pretrained_encoder:
        raise ConfigError(f"{spec['arch']} has no pretrained encoder: set encoder_weights to null")
    if encoder.startswith("tu-"):
        if weights is True or weights == "imagenet":
            return True
        raise ConfigError(
            f"encoder_weights {weights!r} for the timm encoder {encoder}: use true (or imagenet) and name the "
            f"pretrained tag in the encoder, e.g. {encoder.split('.')[0]}.<tag> (timm.list_pretrained shows the tags)"
        )
    import segmentation_models_pytorch as smp

    if encoder not in smp.encoders.encoders:
        raise ConfigError(f"unknown encoder {encoder!r}")
    available = list(smp.encoders.encoders[encoder]["pretrained_settings"])
    name = "imagenet" if weights is True else weights
    if name not in available:
        raise ConfigError(f"encoder {encoder} has no pretrained weights {weights!r}; available: {available}")
    return name


def hub_weights(spec: dict) -> HubWeights | None:
    """Which hub files the model's pretrained encoder needs (None: none)."""
    weights = library_weights(spec)
    if weights is None:
        return None
    encoder = spec["encoder"]
    if encoder.startswith("tu-"):
        import timm
        from timm.models import get_pretrained_cfg

        name = encoder[3:]
        config = get_pretrained_cfg(name) if timm.is_model(name) else None
        if config is None or not config.hf_hub_id:
            raise ConfigError(f"timm encoder {name} has no pretrained weights on the Hugging Face Hub")
        repo_id, _, revision = config.hf_hub_id.partition("@")
        filename = config.hf_hub_filename or "pytorch_model.bin"
        alternatives = (filename,) if filename.endswith(".safetensors") else ("model.safetensors", filename)
        return HubWeights(repo_id, revision or None, (alternatives,))
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders[encoder]["pretrained_settings"][weights]
    return HubWeights(settings["repo_id"], settings["revision"], (("config.json",), ("model.safetensors",)))


def missing_weights(spec: dict) -> str | None:
    """A description of the hub weights the model needs and the cache lacks."""
    source = hub_weights(spec)
    if source is None or source.cached():
        return None
    return f"{spec['encoder']} ({source.describe()})"


def weights_cache_folder() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def fixed_input_size(encoder: str) -> bool:
    """timm encoders built for one input size (Swin, ViT): they get
    ``img_size`` at build time and then accept only that size."""
    if not encoder.startswith("tu-"):
        return False
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(encoder[3:])
    return bool(config and config.fixed_input_size)


def build_nnunet(input_size: int, **options):
    """nnU-Net's 2D U-Net, configured from the input size as nnU-Net plans it.

    Stages: the input is halved until the feature map is ``min_feature_map``
    pixels; 3 x 3 convolutions, features doubling from ``base_features`` up
    to ``max_features``, instance norm and leaky ReLU. ``residual`` gives the
    residual-encoder variant; ``deep_supervision`` N > 0 adds N lower-
    resolution heads whose outputs training adds to the loss (halving
    weights). ``options`` are NNUNET_OPTIONS. Built by MONAI's DynUNet.
    """
    from monai.networks.nets import DynUNet

    unknown = sorted(set(options) - set(NNUNET_OPTIONS))
    if unknown:
        raise ConfigError(f"{NNUNET} has no option(s) {unknown}; its kwargs are {sorted(NNUNET_OPTIONS)}")
    options = {**NNUNET_OPTIONS, **options}
    min_feature_map, deep_supervision = options["min_feature_map"], int(options["deep_supervision"])
    if input_size is None:
        raise ConfigError(f"{NNUNET} is planned from the input size: build it with input_size")
    pools = int(math.floor(math.log2(input_size / min_feature_map)))
    if pools < 1:
        raise ConfigError(
            f"{NNUNET}: input size {input_size} leaves no room for one downsampling to {min_feature_map} px"
        )
    if not 0 <= deep_supervision < pools:
        raise ConfigError(
            f"{NNUNET}: deep_supervision must be between 0 and {pools - 1} heads for input size {input_size}"
        )
    strides = [1] + [2] * pools
    return DynUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=NUM_CLASSES,
        kernel_size=[3] * (pools + 1),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=[min(options["base_features"] * 2**stage, options["max_features"]) for stage in range(pools + 1)],
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supervision > 0,
        deep_supr_num=max(1, deep_supervision),
        res_block=bool(options["residual"]),
    )


def build_model(spec: dict, input_size: int | None = None) -> torch.nn.Module:
    """A model from a config entry: {arch, encoder, encoder_weights, kwargs},
    built by its architecture's entry in ``architectures()``.

    ``encoder_weights``: null (random initialisation), a local state-dict
    file of the encoder, or pretrained weights as segmentation-models-pytorch
    names them (``imagenet``, or ``true`` for a timm encoder, whose tag is
    in its name, e.g. ``tu-hrnet_w48.ms_in1k``). Those come through the
    libraries' Hugging Face Hub cache; with the hub offline (every command
    but fetch-weights) a missing file raises MissingWeights, never a download.

    ``input_size``: the network's input side. nnUNet is planned from it and
    fixed-size timm encoders (Swin, ViT) are built for it; other models
    accept any multiple of 32.
    """
    member = architecture(spec.get("arch"))
    if not member.pretrained_encoder and spec.get("encoder_weights") not in (None, False):
        raise ConfigError(f"{spec['arch']} has no pretrained encoder: set encoder_weights to null")
    return member.build(spec, input_size)


def build_smp(model_class, spec: dict, input_size: int | None) -> torch.nn.Module:
    """A segmentation-models-pytorch architecture (``model_class``) around
    the spec's encoder, with its pretrained weights from the hub cache or a
    local file (``build_model``)."""
    from huggingface_hub import constants

    arch, encoder = spec.get("arch"), spec.get("encoder")
    kwargs = dict(spec.get("kwargs") or {})
    pretrained = library_weights(spec)
    if pretrained is not None and constants.HF_HUB_OFFLINE:
        absent = missing_weights(spec)
        if absent:
            raise MissingWeights(
                f"pretrained weights of {absent} are not in the weights cache {weights_cache_folder()}"
            )
    if encoder and fixed_input_size(encoder) and "img_size" not in kwargs:
        if input_size is None:
            raise ConfigError(f"encoder {encoder} is built for one input size: build it with input_size")
        kwargs["img_size"] = input_size
    try:
        model = model_class(
            encoder_name=encoder, encoder_weights=pretrained, in_channels=3, classes=NUM_CLASSES, **kwargs
        )
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as error:
        reason = str(error)
        if "output_stride" in reason:
            reason = f"{arch} needs an encoder with dilated convolutions (output_stride 8 or 16), which {encoder} lacks ({error})"
        raise ConfigError(f"cannot build model {arch!r} with encoder {encoder!r}: {reason}") from None
    if is_local_file(spec.get("encoder_weights")):
        load_encoder_file(model, Path(spec["encoder_weights"]))
    return model


def _build_nnunet_member(spec: dict, input_size: int | None) -> torch.nn.Module:
    return build_nnunet(input_size, **(spec.get("kwargs") or {}))


class BlockAdapter(torch.nn.Module):
    """A frozen Hiera block whose input first gets a trainable bottleneck
    added (SAM2-UNet's adapter: linear down to ``width`` features, GELU,
    linear back up, GELU). Hiera's blocks take channels-last maps
    (batch, height, width, features), so the linear layers act on the
    features."""

    def __init__(self, block: torch.nn.Module, features: int, width: int):
        super().__init__()
        self.block = block
        self.adapter = torch.nn.Sequential(
            torch.nn.Linear(features, width),
            torch.nn.GELU(),
            torch.nn.Linear(width, features),
            torch.nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x + self.adapter(x))


def build_sam2_unet(spec: dict, input_size: int | None) -> torch.nn.Module:
    """SAM2-UNet: an smp U-Net around a SAM2 Hiera encoder (``encoder:
    tu-sam2_hiera_<tiny|small|base_plus|large>[.<tag>]``, its SAM2 weights
    from the hub cache like every timm encoder). With ``adapters`` (the
    default, as the paper trains it) the encoder's weights are frozen and
    each Hiera block gets a ``BlockAdapter``; the adapters, decoder and
    head train. Other kwargs go to the U-Net (e.g. decoder_channels)."""
    import segmentation_models_pytorch as smp

    encoder = str(spec.get("encoder"))
    if not encoder.startswith(SAM2_ENCODER_PREFIX):
        raise ConfigError(
            f"{SAM2_UNET} takes a SAM2 Hiera encoder ({SAM2_ENCODER_PREFIX}_tiny, _small, _base_plus or _large), "
            f"not {encoder!r}"
        )
    options = {**SAM2_UNET_OPTIONS, **(spec.get("kwargs") or {})}
    adapters, width = options.pop("adapters"), options.pop("adapter_dim")
    if not isinstance(adapters, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(
            f"{SAM2_UNET}: adapters must be true or false and adapter_dim a positive integer, "
            f"not {adapters!r} and {width!r}"
        )
    model = build_smp(smp.Unet, {**spec, "kwargs": options}, input_size)
    if adapters:
        add_block_adapters(model.encoder, width)
    return model


def add_block_adapters(encoder: torch.nn.Module, width: int) -> None:
    """Freeze ``encoder`` and put a BlockAdapter around each of its Hiera blocks."""
    from timm.models.hieradet_sam2 import MultiScaleBlock

    encoder.requires_grad_(False)
    blocks = [name for name, module in encoder.named_modules() if isinstance(module, MultiScaleBlock)]
    if not blocks:
        raise ConfigError(f"{SAM2_UNET}: the encoder has no Hiera blocks to put adapters in")
    for name in blocks:
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name)
        block = parent.get_submodule(child)
        setattr(parent, child, BlockAdapter(block, block.dim, width))


@dataclass(frozen=True)
class Architecture:
    """An entry of ``architectures()``: ``build(spec, input_size)`` makes the
    network; ``pretrained_encoder`` says whether ``encoder_weights`` may
    name weights for it (otherwise it must be null)."""

    build: Callable[[dict, int | None], torch.nn.Module]
    pretrained_encoder: bool = True


@functools.cache
def architectures() -> dict[str, Architecture]:
    """The architectures ``models.<name>.arch`` may name, by name: every one
    segmentation-models-pytorch's ``create_model`` knows (taken from its own
    table, so a new release's architectures come with it), nnUNet and
    SAM2UNet. A
    new member is one entry here; its builder may wrap ``build_smp``, e.g.
    an smp Unet whose encoder it then freezes. Built on first use, as
    importing segmentation-models-pytorch takes seconds."""
    import segmentation_models_pytorch as smp

    members = {
        model_class.__name__: Architecture(functools.partial(build_smp, model_class))
        for model_class in smp.MODEL_ARCHITECTURES_MAPPING.values()
    }
    members[NNUNET] = Architecture(_build_nnunet_member, pretrained_encoder=False)
    members[SAM2_UNET] = Architecture(build_sam2_unet)
    return members


def architecture(name) -> Architecture:
    """The entry of ``architectures()`` called ``name``, in any case (as
    segmentation-models-pytorch's create_model takes it); an unknown name
    is a ConfigError listing the choices."""
    members = architectures()
    by_lower_case = {known.lower(): member for known, member in members.items()}
    if not isinstance(name, str) or name.lower() not in by_lower_case:
        raise ConfigError(f"unknown architecture {name!r}; choices: {', '.join(sorted(members, key=str.lower))}")
    return by_lower_case[name.lower()]


def load_encoder_file(model: torch.nn.Module, path: Path) -> None:
    """Encoder weights from a local state dict (.pt/.pth/.bin or .safetensors)."""
    if not path.is_file():
        raise MissingInput(f"encoder_weights {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path, device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    expected = model.encoder.state_dict()
    matching = [key for key, value in state.items() if key in expected and expected[key].shape == value.shape]
    if not matching:
        raise ConfigError(f"encoder_weights {path} match none of the encoder's parameters")
    # Some smp encoders drop their classifier keys themselves; extra keys
    # (e.g. an ImageNet head) are ignored.
    model.encoder.load_state_dict({key: state[key] for key in matching}, strict=False)


def check_model(spec: dict, input_size: int, sizes, batch_size: int = 1) -> int:
    """Build the model (with its weights), push one image of every side in
    ``sizes`` through it and one training batch of ``batch_size`` inputs of
    ``input_size``; return its number of parameters.

    The passes run on PyTorch's meta device: shapes only, no memory and no
    arithmetic, so a 1024 px HRNet-W48 is checked in a second. They find
    what only a forward pass shows: a Swin encoder given another size than
    it was built for, a decoder that does not fit the encoder, a batch norm
    that cannot train on one image (DeepLabV3+ at batch size 1).
    """
    model = build_model(spec, input_size)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    model = model.to("meta").eval()
    passes = [(side, 1, False) for side in sorted(set(sizes))] + [(input_size, batch_size, True)]
    for side, batch, training in passes:
        try:
            with torch.no_grad():
                output = model.train(training)(torch.zeros(batch, 3, side, side, device="meta"))
        except NotImplementedError:
            continue  # an operation without a meta kernel: the shape cannot be checked this way
        except (RuntimeError, ValueError, AssertionError, TypeError, IndexError) as error:
            if training:
                raise ConfigError(f"cannot train on batches of {batch} (train.batch_size): {error}") from None
            origin = "" if side == input_size else f" (input size {input_size} x a test-time scale, resize mode)"
            raise ConfigError(f"does not run on {side} x {side} inputs{origin}: {error}") from None
        # In training, deep supervision adds a head axis: (batch, heads, classes, side, side).
        if tuple(output.shape[-3:]) != (NUM_CLASSES, side, side) or output.shape[0] != batch:
            raise ConfigError(
                f"gives {tuple(output.shape)} for a {side} x {side} input, not ({batch}, {NUM_CLASSES}, {side}, {side})"
            )
    return parameters


def scaled_size(length: int, scale: float) -> int:
    """The input side of a resize-mode network at a test-time scale of its
    input size: a multiple of 32 (at least 32), as the encoders halve the
    map five times. It lives with the models, not in inference.py (which
    imports this module), because the model check needs it too."""
    return max(32, int(round(length * scale / 32)) * 32)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) grayscale -> float32 (B, 3, H, W), ImageNet-normalised.

    Done on the model's device: data loading then moves uint8 (a quarter of
    the bytes) and spends no CPU time on it.
    """
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device)[None, :, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=images.device)[None, :, None, None]
    return (images.float() / 255.0 - mean) / std


def channels_last_suits(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a convolutional network whose every normalisation
    is a batch norm: convolutions and batch norms in half precision run
    fastest on NVIDIA's tensor cores with channels-last tensors. Networks
    with layer, group or instance norms (Swin and other transformers,
    SegFormer, the nnU-Net-style DynUNet) keep the default layout: their
    norms and reshapes do not gain from it or copy back."""
    channels_first = tuple(
        norm
        for norm in (
            torch.nn.LayerNorm,
            torch.nn.GroupNorm,
            torch.nn.modules.instancenorm._InstanceNorm,
            getattr(torch.nn, "RMSNorm", None),
        )
        if norm is not None
    )
    modules = list(model.modules())
    return any(isinstance(module, torch.nn.Conv2d) for module in modules) and not any(
        isinstance(module, channels_first) for module in modules
    )


def to_device(model: torch.nn.Module, device) -> torch.nn.Module:
    """``model`` on ``device``; on CUDA in channels-last memory format where
    that suits it (``channels_last_suits``). The CPU keeps the default layout."""
    model = model.to(device)
    if torch.device(device).type == "cuda" and channels_last_suits(model):
        model = model.to(memory_format=torch.channels_last)
    return model


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict) -> None:
    """``model``'s weights with ``meta``: what rebuilds the network (model,
    input_size, input_mode) and, from training, what it was trained on
    (preprocess, classes: ``check_checkpoint``) and how well (fold, epoch,
    val_dice)."""
    with atomic_path(path) as temporary:
        torch.save({"state_dict": model.state_dict(), **meta}, temporary)


def load_checkpoint(path: str | Path, device) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from a checkpoint (loaded with weights_only=True)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # The state dict holds every weight: the encoder's pretrained weights
    # are not needed again.
    model = build_model({**checkpoint["model"], "encoder_weights": None}, checkpoint.get("input_size"))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise DataError(f"{path}: checkpoint does not fit model {checkpoint['model']}: {error}") from None
    return to_device(model, device).eval(), checkpoint


def check_checkpoint(path: str | Path, checkpoint: dict, preprocess: dict) -> None:
    """Refuse a checkpoint trained on other inputs or for other classes than
    a prediction would give it: its recorded preprocess section against
    ``preprocess`` (the prediction's complete section) and its class list
    against classes.CLASSES. As nnU-Net keeps its plans beside the model,
    the checkpoint records what training used, so a config changed since
    (or another run's) cannot silently feed it other images. The
    ConfigError names the file, each differing option and both values.

    A checkpoint from before checkpoints recorded these is accepted with a
    warning (docs/formats.md says why)."""
    unrecorded = [field for field in ("preprocess", "classes") if field not in checkpoint]
    if unrecorded:
        log.warning(
            "%s records no %s (written before checkpoints recorded them): it is used unchecked; "
            "retrain it to have its options checked",
            path,
            " and no ".join(unrecorded),
        )
    differences = []
    if "preprocess" in checkpoint:
        differences += [
            f"preprocess.{option}: checkpoint {trained}, this prediction {given}"
            for option, trained, given in _differing_options(checkpoint["preprocess"], preprocess)
        ]
    if "classes" in checkpoint:
        differences += _differing_classes(list(checkpoint["classes"]))
    if differences:
        raise ConfigError(
            f"{path} was trained on other inputs than this prediction gives: {'; '.join(differences)}. "
            "Predict with the options it was trained with, or retrain it with these"
        )


def _differing_options(trained: dict, given: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted option, trained value, given value) of every option whose
    values differ, nested sections option by option; an option only one
    side has reads "(none)" on the other."""
    found = []
    for option in sorted(set(trained) | set(given)):
        left, right = trained.get(option), given.get(option)
        if isinstance(left, dict) and isinstance(right, dict):
            found += _differing_options(left, right, f"{prefix}{option}.")
        elif option not in trained or option not in given or left != right:
            shown = [repr(value) if option in side else "(none)" for value, side in ((left, trained), (right, given))]
            found.append((prefix + option, *shown))
    return found


def _differing_classes(trained: list) -> list[str]:
    """The channels whose class the checkpoint names otherwise than classes.py."""
    if trained == CLASSES:
        return []
    if len(trained) != len(CLASSES):
        return [f"classes: checkpoint {len(trained)} {trained}, this code (classes.py) {len(CLASSES)} {CLASSES}"]
    return [
        f"class of channel {channel}: checkpoint {old!r}, this code (classes.py) {new!r}"
        for channel, (old, new) in enumerate(zip(trained, CLASSES))
        if old != new
    ]


# What a user runs to fill the weights cache, named in the error of a run that lacks weights.
FETCH_COMMAND = "handbone fetch-weights --configfile config.yaml [--configfile <this run's config file>]"


def _model_sizes(options: dict, scales) -> tuple[int, list[int], int]:
    """A model's input size, every side its network sees (the input size,
    and in resize mode each test-time scale of it) and its batch size."""
    size = int(options["input_size"])
    sides = [size] + ([scaled_size(size, scale) for scale in scales] if options["input_mode"] == "resize" else [])
    return size, sides, int(options["batch_size"])


def check_models(models: dict, options: dict, scales, out) -> dict[str, int]:
    """``handbone check-models``: build every model once with its weights
    and run its input sizes (``check_model``); one ConfigError names every
    model that cannot work, and every missing pretrained weight with the
    command that fetches it. Writes {"parameters": {model: count}} to ``out``
    (when given)."""
    from . import config
    from .atomic import write_json

    problems, missing, sizes = [], [], {}
    for name, spec in models.items():
        try:
            absent = missing_weights(spec)
            if absent:
                missing.append(f"models.{name}: {absent}")
                continue
            train = config.section("train", options.get(name), f"training options of models.{name}")
            size, sides, batch_size = _model_sizes(train, scales)
            sizes[name] = check_model(spec, size, sides, batch_size)
        except (ValueError, FileNotFoundError) as error:  # the libraries' own errors for a bad spec, too
            problems.append(f"models.{name}: {error}")
    if missing:
        problems.append(
            f"pretrained weights missing from the weights cache {weights_cache_folder()}: {'; '.join(missing)}. "
            f"Fetch them once on a machine with network: `{FETCH_COMMAND}`, "
            "then copy that folder to this machine (or `dvc add` it); training reads only the cache"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    if out:
        write_json({"parameters": sizes}, out)
    for name, size in sizes.items():
        log.info("models.%s builds: %.1f M parameters", name, size / 1e6)
    return sizes


def fetch_weights(resolved_config: dict, config_files) -> dict:
    """``handbone fetch-weights``: download the pretrained weights of every
    configured model into the weights cache (the hub must be online), and
    list them in ``<cache>/handbone-fetched.json``."""
    from . import config
    from .atomic import write_json

    fetched = {}
    for name, spec in config.model_specs(resolved_config).items():
        source = hub_weights(spec)
        if source is None:
            log.info("models.%s: no pretrained weights to fetch", name)
            continue
        # Building the model with its weights is the fetch: the library
        # downloads them into the hub cache the way it always does.
        build_model(spec, int(config.train_options(resolved_config, name)["input_size"]))
        if not source.cached():
            raise MissingWeights(
                f"models.{name}: {source.describe()} was loaded but is not in {weights_cache_folder()}"
            )
        fetched[name] = {"encoder": spec["encoder"], "hub": source.describe()}
        log.info("models.%s: %s in %s", name, source.describe(), weights_cache_folder())
    write_json(
        {"config_files": list(config_files), "models": fetched}, Path(weights_cache_folder()) / "handbone-fetched.json"
    )
    return fetched


# -- the command line: `handbone check-models, fetch-weights` (cli.py dispatches) --


def check_models_command(args) -> None:
    if (args.models is None) == (not args.configfile):
        raise ConfigError("check-models takes either --configfile or --models (with --options and --scales)")
    if args.configfile:
        values = config.load_config(args.configfile)
        use_weights_cache(args.weights_cache or values["weights"]["cache_dir"], online=False)
        models = config.model_specs(values)
        options = {name: config.train_options(values, name) for name in models}
        scales = values["predict"]["scales"]
    else:
        models = {name: config.model_spec(spec, f"--models: models.{name}") for name, spec in args.models.items()}
        options, scales = args.options, args.scales or config.default("predict.scales")
    check_models(models, options, scales, args.out)


def check_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=check_models_command)
    parser.add_argument(
        "--configfile",
        action="append",
        help="config file(s), merged in order as for fetch-weights (e.g. config.yaml, then configs/second_team.yaml): "
        "check every model they configure with its training options and test-time scales, reading the weights "
        "cache weights.cache_dir unless --weights-cache is given. Instead of --models",
    )
    parser.add_argument(
        "--models",
        type=json_argument,
        help="JSON {name: {arch, encoder, encoder_weights, kwargs}} (the workflow's gate)",
    )
    parser.add_argument(
        "--options",
        type=json_argument,
        default={},
        help="with --models: JSON {name: training options}: input size and mode, batch size "
        "(what they leave out: config.yaml's)",
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help=f"with --models: test-time scales (resize-mode models see each; default: {config.default('predict.scales')})",
    )
    parser.add_argument("--out", help="JSON file for {parameters: {model: count}} (default: none written)")


def fetch_weights_command(args) -> None:
    config_values = config.load_config(args.configfile)
    use_weights_cache(args.weights_cache or config_values["weights"]["cache_dir"], online=True)
    fetch_weights(config_values, args.configfile)


def fetch_weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=fetch_weights_command)
    parser.add_argument(
        "--configfile",
        action="append",
        required=True,
        help="config file; several are merged in order as Snakemake merges them (e.g. config.yaml, "
        "then configs/competition.yaml). The cache is weights.cache_dir unless --weights-cache is given",
    )
