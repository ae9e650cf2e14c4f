"""The model zoo: pretrained weights read offline from the hub cache, the
nnU-Net-style member, the winners' architectures, and what check_models refuses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TIMM_ENCODER, TIMM_REPO, fill_hub_cache, recognisable_weights
from handbone.model import (
    Architecture,
    architectures,
    build_model,
    build_nnunet,
    check_model,
    load_checkpoint,
    save_checkpoint,
)
from handbone.train import deep_supervision_loss, make_loss

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = {
    "arch": "Unet",
    "encoder": f"tu-{TIMM_ENCODER}",
    "encoder_weights": True,
    "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
}
SMP_PRETRAINED = {"arch": "Unet", "encoder": "mobilenet_v2", "encoder_weights": "imagenet"}
TINY_NNUNET = {"arch": "nnUNet", "kwargs": {"base_features": 8, "max_features": 32, "deep_supervision": 1}}

# Run in a fresh interpreter: the hub reads its cache folder and offline
# switch once, at import. Every name look-up and socket connection is
# refused and counted.
ISOLATED = """
import json, socket, sys
attempts = []
def refuse(*args):
    attempts.append(args[1:])
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
{body}
print(json.dumps({{"attempts": len(attempts), **result}}))
"""


def run_isolated(body: str, *arguments) -> dict:
    """The body's ``result`` with the connection attempts, and its log (stderr)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    environment["PYTHONPATH"] = str(REPO / "workflow")
    completed = subprocess.run(
        [sys.executable, "-c", ISOLATED.format(body=body), *map(str, arguments)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "log": completed.stderr}


LOAD_AND_COMPARE = """
import torch
from safetensors.torch import load_file
from handbone.arguments import use_weights_cache
from handbone.model import build_model
use_weights_cache(sys.argv[1], online=False)
model = build_model(json.loads(sys.argv[2]), 64)
expected = load_file(sys.argv[3])
loaded = model.encoder.model.state_dict() if sys.argv[4] == "timm" else model.encoder.state_dict()
shared = [key for key in loaded if key in expected]
result = {"compared": len(shared), "parameters": len(loaded),
          "different": [key for key in shared if not torch.equal(loaded[key], expected[key])]}
"""


def test_pretrained_timm_encoder_loads_offline_from_the_cache(pretrained_cache):
    cache, weights = pretrained_cache
    snapshot = next((cache / f"models--{TIMM_REPO.replace('/', '--')}" / "snapshots").iterdir())
    result = run_isolated(LOAD_AND_COMPARE, cache, json.dumps(PRETRAINED), snapshot / "model.safetensors", "timm")
    # Every encoder tensor came from the file (the file also has the ImageNet head).
    assert result["compared"] == result["parameters"] > 50
    assert result["different"] == [] and result["attempts"] == 0


def test_pretrained_smp_encoder_loads_offline_from_its_pinned_revision(tmp_path):
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    weights = recognisable_weights(smp.encoders.get_encoder("mobilenet_v2").state_dict())
    snapshot = fill_hub_cache(
        tmp_path,
        settings["repo_id"],
        {"config.json": {"mean": [0.5] * 3, "std": [0.5] * 3}, "model.safetensors": weights},
        revision=settings["revision"],
    )
    result = run_isolated(LOAD_AND_COMPARE, tmp_path, json.dumps(SMP_PRETRAINED), snapshot / "model.safetensors", "smp")
    assert result["compared"] == result["parameters"] == len(weights)
    assert result["different"] == [] and result["attempts"] == 0


CHECK_MODELS = """
from handbone.cli import main
code = main(["--weights-cache", sys.argv[1], sys.argv[2], "--models", sys.argv[3], "--options", sys.argv[4],
             "--out", sys.argv[5]])
result = {"code": code}
"""


def test_check_models_reads_only_the_cache_and_names_every_missing_model(pretrained_cache, tmp_path):
    cache, _ = pretrained_cache
    models = json.dumps({"pretrained": PRETRAINED, "nnunet": TINY_NNUNET})
    options = json.dumps({"nnunet": {"input_size": 64}})
    passed = run_isolated(CHECK_MODELS, cache, "check-models", models, options, tmp_path / "checked.json")
    assert (passed["attempts"], passed["code"]) == (0, 0)
    assert set(json.loads((tmp_path / "checked.json").read_text())["parameters"]) == {"pretrained", "nnunet"}

    models = json.dumps(
        {"pretrained": PRETRAINED, "smp": SMP_PRETRAINED, "scratch": {**PRETRAINED, "encoder_weights": None}}
    )
    failed = run_isolated(CHECK_MODELS, tmp_path / "empty", "check-models", models, "{}", tmp_path / "again.json")
    message = failed["log"]
    assert (failed["attempts"], failed["code"]) == (0, 1)
    assert (
        "models.pretrained" in message
        and TIMM_REPO in message
        and "models.smp" in message
        and "smp-hub/mobilenet_v2" in message
    )
    assert "models.scratch" not in message and "handbone fetch-weights --configfile" in message
    assert not (tmp_path / "again.json").exists()


FETCH_WEIGHTS = """
from handbone.cli import main
result = {"code": main(["fetch-weights", "--configfile", sys.argv[1], "--configfile", sys.argv[2]])}
"""


def test_fetch_weights_is_the_one_command_that_asks_the_hub(pretrained_cache, tmp_path):
    import yaml

    cache, _ = pretrained_cache
    # Merged over config.yaml as Snakemake merges --configfile: its demo model dropped, ours added.
    overlay = {"models": {"unet_mobilenetv3": None, "pretrained": PRETRAINED}, "weights": {"cache_dir": str(cache)}}
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    fetched = run_isolated(FETCH_WEIGHTS, REPO / "config.yaml", tmp_path / "overlay.yaml")
    # Online, the hub asks for the newest revision (refused here) and then
    # uses the cached file: the library's own download path.
    assert fetched["code"] == 0 and fetched["attempts"] >= 1, fetched["log"]
    listed = json.loads((cache / "handbone-fetched.json").read_text())
    assert listed["models"] == {"pretrained": {"encoder": PRETRAINED["encoder"], "hub": TIMM_REPO}}


CHECK_CONFIG_MODELS = """
from handbone.cli import main
result = {"code": main([*sys.argv[1:-2], "check-models", "--configfile", sys.argv[-2], "--configfile", sys.argv[-1]])}
"""


def test_check_models_checks_a_configs_models_offline_and_names_every_missing_hub_repo(pretrained_cache, tmp_path):
    import yaml

    cache, _ = pretrained_cache
    overlay = {"models": {"unet_mobilenetv3": None, "pretrained": PRETRAINED}, "weights": {"cache_dir": str(cache)}}
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    passed = run_isolated(CHECK_CONFIG_MODELS, REPO / "config.yaml", tmp_path / "overlay.yaml")
    assert (passed["code"], passed["attempts"]) == (0, 0) and "models.pretrained builds" in passed["log"]
    # The second team's recipe with an empty cache: every member's hub repo, SAM2's among them, and the fetch command.
    empty = ("--weights-cache", str(tmp_path / "empty"))
    failed = run_isolated(CHECK_CONFIG_MODELS, *empty, REPO / "config.yaml", REPO / "configs" / "second_team.yaml")
    assert (failed["code"], failed["attempts"]) == (1, 0)
    members = yaml.safe_load((REPO / "configs" / "second_team.yaml").read_text())["models"]
    for name, spec in members.items():
        if spec:
            assert f"models.{name}: {spec['encoder']}" in failed["log"]
    assert "(timm/sam2_hiera_large.fb_r1024)" in failed["log"] and "handbone fetch-weights" in failed["log"]


def test_nnunet_is_planned_from_the_input_size_like_nnunet():
    network = build_nnunet(1024)
    assert network.filters == [32, 64, 128, 256, 512, 512, 512, 512, 512]  # halved down to 4 px, capped at 512
    assert list(network.strides) == [1] + [2] * 8
    assert type(network.input_block).__name__ == "UnetBasicBlock"
    assert type(build_nnunet(256, residual=True).input_block).__name__ == "UnetResBlock"
    assert len(build_nnunet(256).filters) == 7
    with pytest.raises(ValueError, match="deep_supervision"):
        build_nnunet(64, deep_supervision=4)
    with pytest.raises(ValueError, match="no option"):
        build_model({"arch": "nnUNet", "kwargs": {"depth": 5}}, 64)
    with pytest.raises(ValueError, match="no pretrained encoder"):
        build_model({"arch": "nnUNet", "encoder_weights": "imagenet"}, 64)


def test_an_unknown_architecture_is_refused_with_every_choice():
    import segmentation_models_pytorch as smp

    with pytest.raises(ValueError) as refused:
        build_model({"arch": "Unet3Plus", "encoder": "resnet18"}, 64)
    message = str(refused.value)
    assert message.startswith("unknown architecture 'Unet3Plus'; choices: ")
    # The choices are segmentation-models-pytorch's own architectures, nnUNet and SAM2UNet.
    smp_names = [model_class.__name__ for model_class in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    assert set(message.split("choices: ")[1].split(", ")) == {*smp_names, "nnUNet", "SAM2UNet"}
    assert {"Unet", "UnetPlusPlus", "DeepLabV3Plus", "UPerNet", "Segformer"} <= set(smp_names)
    # Names are taken in any case, as smp's create_model takes them.
    assert type(build_model({"arch": "unetplusplus", "encoder": "resnet18"})).__name__ == "UnetPlusPlus"
    # The model check names it too (before any weights are looked up).
    with pytest.raises(ValueError, match="unknown architecture 'Unet3Plus'; choices: .*nnUNet"):
        check_model({"arch": "Unet3Plus", "encoder": "resnet18", "encoder_weights": "imagenet"}, 64, [64])


def test_a_new_architecture_is_one_entry_of_the_table(monkeypatch):
    built = []

    def tiny(spec, input_size):
        built.append((spec["kwargs"], input_size))
        return torch.nn.Conv2d(3, 29, 1)

    monkeypatch.setitem(architectures(), "Tiny", Architecture(tiny, pretrained_encoder=False))
    assert isinstance(build_model({"arch": "Tiny", "kwargs": {"width": 4}}, 64), torch.nn.Conv2d)
    assert built == [({"width": 4}, 64)]
    assert check_model({"arch": "Tiny", "kwargs": {}}, 64, [64, 96]) == 3 * 29 + 29
    with pytest.raises(ValueError, match="Tiny has no pretrained encoder"):
        build_model({"arch": "Tiny", "encoder_weights": "imagenet"}, 64)
    with pytest.raises(ValueError, match="choices: .*Tiny"):
        build_model({"arch": "Huge"}, 64)


def test_deep_supervision_heads_are_added_with_halving_weights():
    model = build_model({**TINY_NNUNET, "kwargs": {**TINY_NNUNET["kwargs"], "deep_supervision": 2}}, 64)
    images, target = torch.randn(2, 3, 64, 64), (torch.rand(2, 29, 64, 64) > 0.5).float()
    heads = model.train()(images)
    assert heads.shape == (2, 3, 29, 64, 64)
    assert model.eval()(images).shape == (2, 29, 64, 64)
    loss = make_loss({"dice": 1.0, "bce": 1.0})
    expected = sum(weight * loss(heads[:, head], target) for head, weight in enumerate([4 / 7, 2 / 7, 1 / 7]))
    assert torch.allclose(loss(heads, target), expected)
    assert torch.allclose(deep_supervision_loss(loss, heads[:, :1], target), loss(heads[:, 0], target))


@pytest.mark.parametrize(
    "spec",
    [
        {"arch": "UPerNet", "encoder": "tu-swin_tiny_patch4_window7_224"},  # Swin-UPerNet, built for the input size
        {"arch": "Segformer", "encoder": "mit_b0"},
        {"arch": "UnetPlusPlus", "encoder": "tu-efficientnet_b0"},
        {"arch": "Unet", "encoder": "tu-hrnet_w18_small"},
        {"arch": "DeepLabV3Plus", "encoder": "resnet18"},
        TINY_NNUNET,
        {"arch": "SAM2UNet", "encoder": "tu-sam2_hiera_tiny"},  # SAM2-UNet, encoder frozen with adapters
    ],
    ids=lambda spec: f"{spec['arch']}-{spec.get('encoder', '')}",
)
def test_the_winners_architectures_pass_the_check_and_train_one_step(spec):
    assert check_model(spec, 64, [64], batch_size=2) > 0
    torch.manual_seed(0)
    model = build_model(spec, 64).train()
    before = [parameter.detach().clone() for parameter in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = make_loss({"dice": 1.0, "bce": 1.0})(
        model(torch.randn(2, 3, 64, 64)), (torch.rand(2, 29, 64, 64) > 0.5).float()
    )
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


SAM2_TINY = {
    "arch": "SAM2UNet",
    "encoder": "tu-sam2_hiera_tiny",
    "encoder_weights": None,
    "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
}


def test_sam2_unet_trains_adapters_decoder_and_head_with_the_encoder_frozen_or_all_of_it_fine_tuned(tmp_path):
    torch.manual_seed(0)
    model = build_model(SAM2_TINY, 64).train()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    encoder = {name for name in trainable if name.startswith("encoder.")}
    # Hiera-T has 12 blocks: one adapter (down, up) in front of each, nothing else of the encoder trains.
    assert encoder and all(".adapter." in name for name in encoder)
    assert len([name for name in encoder if name.endswith("adapter.0.weight")]) == 12
    assert any(name.startswith("decoder.") for name in trainable)
    assert any(name.startswith("segmentation_head.") for name in trainable)
    # One optimiser step over all parameters, as training takes them: the frozen weights stay.
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    make_loss({"dice": 1.0, "bce": 1.0})(
        model(torch.randn(2, 3, 64, 64)), (torch.rand(2, 29, 64, 64) > 0.5).float()
    ).backward()
    optimizer.step()
    moved = {name for name, parameter in model.named_parameters() if not torch.equal(before[name], parameter)}
    assert moved == trainable
    # The checkpoint rebuilds the same network, adapters included.
    save_checkpoint(tmp_path / "model.pt", model.eval(), {"model": SAM2_TINY, "input_size": 64, "input_mode": "resize"})
    loaded, _ = load_checkpoint(tmp_path / "model.pt", "cpu")
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    # adapters: false fine-tunes the whole network and has no adapters.
    tuned = build_model({**SAM2_TINY, "kwargs": {**SAM2_TINY["kwargs"], "adapters": False}}, 64)
    assert all(parameter.requires_grad for parameter in tuned.parameters())
    assert not any(".adapter." in name for name, _ in tuned.named_parameters())
    # Hiera pads its attention windows: any multiple of 32 passes the check.
    assert check_model(SAM2_TINY, 96, [96, 160, 224], batch_size=2) > 0
    with pytest.raises(ValueError, match="takes a SAM2 Hiera encoder"):
        build_model({**SAM2_TINY, "encoder": f"tu-{TIMM_ENCODER}"}, 64)
    with pytest.raises(ValueError, match="adapters must be true or false"):
        build_model({**SAM2_TINY, "kwargs": {"adapters": "yes"}}, 64)


SAM2_REPO = "timm/sam2_hiera_tiny.fb_r896"
LOAD_SAM2 = """
import torch
from safetensors.torch import load_file
from handbone.arguments import use_weights_cache
from handbone.model import build_model
use_weights_cache(sys.argv[1], online=False)
model = build_model(json.loads(sys.argv[2]), 64)
expected = load_file(sys.argv[3])
# The encoder's keys as timm saves the network: without the features wrapper
# (model.) and the adapters' wrapper (block.); the adapters are new.
loaded = {key.removeprefix("model.").replace(".block.", "."): value
          for key, value in model.encoder.model.state_dict().items() if ".adapter." not in key}
result = {"compared": len([key for key in loaded if key in expected]), "parameters": len(loaded),
          "different": [key for key in loaded if key in expected and not torch.equal(loaded[key], expected[key])]}
"""


def test_sam2_unet_loads_sam2_weights_offline_from_the_cache(tmp_path):
    import timm

    weights = recognisable_weights(timm.create_model("sam2_hiera_tiny").state_dict())
    snapshot = fill_hub_cache(tmp_path, SAM2_REPO, {"model.safetensors": weights})
    spec = {**SAM2_TINY, "encoder": "tu-sam2_hiera_tiny.fb_r896", "encoder_weights": True}
    result = run_isolated(LOAD_SAM2, tmp_path, json.dumps(spec), snapshot / "model.safetensors")
    assert result["compared"] == result["parameters"] > 100
    assert result["different"] == [] and result["attempts"] == 0
    # With the cache empty the model check names SAM2's hub repo and the command that fetches it.
    failed = run_isolated(
        CHECK_MODELS, tmp_path / "empty", "check-models", json.dumps({"sam2_unet": spec}), "{}", tmp_path / "out.json"
    )
    assert failed["code"] == 1 and SAM2_REPO in failed["log"] and "handbone fetch-weights" in failed["log"]


def test_combinations_that_cannot_work_are_refused_with_the_reason():
    swin = {"arch": "UPerNet", "encoder": "tu-swin_tiny_patch4_window7_224"}
    with pytest.raises(ValueError, match="dilated convolutions"):
        check_model({"arch": "DeepLabV3Plus", "encoder": "tu-swin_tiny_patch4_window7_224"}, 64, [64])
    # Swin accepts only the size it was built for: resize mode with a test-time scale gives another.
    with pytest.raises(ValueError, match=r"96 x 96 inputs \(input size 64 x a test-time scale"):
        check_model(swin, 64, [64, 96])
    with pytest.raises(ValueError, match=r"cannot train on batches of 1 \(train.batch_size\)"):
        check_model({"arch": "DeepLabV3Plus", "encoder": "resnet18"}, 64, [64], batch_size=1)
    assert check_model({"arch": "DeepLabV3Plus", "encoder": "resnet18"}, 64, [64], batch_size=2) > 0
    with pytest.raises(ValueError, match="use true"):
        build_model({**PRETRAINED, "encoder_weights": "ssl"}, 64)
    with pytest.raises(ValueError, match="no pretrained weights 'imagenet21k'"):
        build_model({**SMP_PRETRAINED, "encoder_weights": "imagenet21k"}, 64)


def test_fixed_size_and_nnunet_checkpoints_predict_any_image(tmp_path):
    from handbone.inference import predict_probabilities

    for name, spec in {
        "swin": {"arch": "UPerNet", "encoder": "tu-swin_tiny_patch4_window7_224"},
        "nnunet": TINY_NNUNET,
    }.items():
        save_checkpoint(
            tmp_path / f"{name}.pt", build_model(spec, 64), {"model": spec, "input_size": 64, "input_mode": "patch"}
        )
        model, checkpoint = load_checkpoint(tmp_path / f"{name}.pt", torch.device("cpu"))
        image = np.random.default_rng(0).integers(0, 256, (100, 90), dtype=np.uint8)
        assert predict_probabilities(
            [model], image, checkpoint["input_size"], torch.device("cpu"), mode="patch"
        ).shape == (29, 100, 90)
