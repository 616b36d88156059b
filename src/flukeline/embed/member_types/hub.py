"""Hub members (`type: hub`): the field's published re-identification descriptors, downloaded from
the Hugging Face hub and used zero-shot (no head, no training), for users who are online. Never a
default: a member must say `type: hub` AND `pretrained: hub` (the explicit opt-in to download);
anything else is refused before any network access.

The member's `backbone` names the published model:

- `hf-hub:<org>/<name>`: a timm model published on the hub (config.json + weights), e.g.
  `hf-hub:BVRA/MegaDescriptor-T-224` (MegaDescriptor, WildlifeDatasets; licence CC BY-NC 4.0:
  NON-COMMERCIAL use only; a 224 x 224 Swin: set the member's `size` to [224, 224]);
- a timm name with a pretrained tag, e.g. `vit_small_patch14_dinov2.lvd142m` (DINOv2, Apache-2.0;
  518 x 518 by default);
- `hf-transformers:<org>/<name>`: a model published for Hugging Face transformers with its own
  code, loaded with `trust_remote_code=True`, e.g. `hf-transformers:conservationxlabs/miewid-msv3`
  (MiewID; published at 440 x 440). transformers is not a flukeline dependency: install it
  yourself (`pip install transformers`) to use these.

Check each model's licence before use. Downloads go to the Hugging Face cache (HF_HOME /
HF_HUB_CACHE); with HF_HUB_OFFLINE=1 a model already in the cache loads without the network.
The weights file stores the whole network and how to rebuild it (timm: the architecture and its
arguments; transformers: the repository, whose code must be in the cache), so embedding with a
trained-out member needs no download for timm models. Models with a fixed input size (timm's
`fixed_input_size`, e.g. ViT, Swin) get the crops resized to it inside the member; the others see
the crops at the member's `size`. Crops are normalised with the ImageNet statistics, as these
models were trained. RGB only (`in_chans` 3)."""

from __future__ import annotations

import logging

import timm
import torch
from torch import nn

from flukeline.core.errors import InputError
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last
from flukeline.embed.member_types._registry import register_member_type
from flukeline.embed.member_types.base import MemberType, TrainJob, untrained_row
from flukeline.embed.settings import MemberSettings
from flukeline.embed.validation import validation_map5

log = logging.getLogger(__name__)

TIMM_HUB = "hf-hub:"
TRANSFORMERS = "hf-transformers:"


class HubNet(nn.Module):
    """A published descriptor as a member: its output (pooled features) is the embedding; crops are
    resized to `input_size` (height, width) first when the model needs a fixed size."""

    def __init__(self, model: nn.Module, embedding_dim: int, input_size: tuple[int, int] | None = None):
        super().__init__()
        self.model = model
        self.feature_dim = int(embedding_dim)
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))

    @property
    def embedding_dim(self) -> int:
        return self.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            images = nn.functional.interpolate(
                images, size=self.input_size, mode="bilinear", align_corners=False, antialias=True
            )
        return _features(self.model(images))


def _features(output) -> torch.Tensor:
    """The embedding of a model's output: the tensor itself, or a transformers output's pooled
    features (pooler_output, else its first field)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    return output[0] if isinstance(output, (tuple, list)) else output.to_tuple()[0]


def _transformers():
    try:
        import transformers
    except ImportError:
        raise InputError(
            "hub members named hf-transformers:<org>/<name> (e.g. MiewID) load through Hugging Face "
            "transformers, which is not installed (not a flukeline dependency): pip install transformers"
        ) from None
    return transformers


def _timm_recipe(backbone: str) -> tuple[str, dict]:
    """(timm architecture, its constructor arguments) of a timm hub name, to rebuild the network
    from a weights file without the network (an hf-hub: config is read from the HF cache)."""
    if backbone.startswith(TIMM_HUB):
        from timm.models import load_model_config_from_hf

        _, architecture, model_args = load_model_config_from_hf(backbone[len(TIMM_HUB) :])
        return architecture, dict(model_args or {})
    return backbone.split(".", 1)[0], {}


@register_member_type("hub")
class HubMember(MemberType):
    def build(self, settings: MemberSettings) -> HubNet:
        """The published model, downloaded (or read from the HF cache) only with `pretrained: hub`."""
        return self._download(settings)[0]

    def _download(self, settings: MemberSettings) -> tuple[HubNet, dict]:
        backbone = settings.backbone
        if settings.pretrained != "hub":
            raise InputError(
                f"a hub member downloads {backbone} from the Hugging Face hub only when asked: set "
                f"pretrained: hub for it (not {settings.pretrained}); check the model's licence first"
            )
        if int(settings.in_chans) != 3:
            raise InputError(f"a hub member takes RGB crops (in_chans 3), not in_chans {settings.in_chans}")
        meta = {"type": "hub", "backbone": backbone, "in_chans": 3, "dropout": 0.0, "pretrained": "hub"}
        if backbone.startswith(TRANSFORMERS):
            repo = backbone[len(TRANSFORMERS) :]
            model = _transformers().AutoModel.from_pretrained(repo, trust_remote_code=True)
            input_size = None
            meta.update(source="transformers", repository=repo)
        else:
            try:
                model = timm.create_model(backbone, pretrained=True, num_classes=0)
            except RuntimeError as error:  # "Unknown model (...)"
                raise InputError(f"hub member {backbone}: not a timm model ({error})") from None
            architecture, model_args = _timm_recipe(backbone)
            cfg = model.pretrained_cfg
            input_size = tuple(cfg["input_size"][1:]) if cfg.get("fixed_input_size") else None
            meta.update(source="timm", architecture=architecture, model_args=model_args)
        width, height = settings.size
        net = HubNet(model.eval(), 0, input_size)
        with torch.no_grad():
            net.feature_dim = int(net(torch.zeros(1, 3, int(height), int(width))).shape[1])
        meta.update(embedding_dim=net.feature_dim, input_size=None if input_size is None else list(input_size))
        log.info(
            "hub member %s: %d-d features%s", backbone, net.feature_dim, f", input {input_size}" if input_size else ""
        )
        return net.eval(), meta

    def from_meta(self, meta: dict) -> HubNet:
        if meta.get("source") == "transformers":
            transformers = _transformers()
            config = transformers.AutoConfig.from_pretrained(meta["repository"], trust_remote_code=True)
            model = transformers.AutoModel.from_config(config, trust_remote_code=True)
        else:
            args = {**meta["model_args"], "num_classes": 0}
            model = timm.create_model(meta["architecture"], pretrained=False, **args)
        return HubNet(model, meta["embedding_dim"], meta["input_size"])

    def train(self, job: TrainJob) -> None:
        """No training: the published model scored on the fold (a one-row history), as zero_shot."""
        settings, fold = job.settings, job.fold
        configure_torch(job.threads, job.seed)
        device = select_device()
        model, meta = self._download(settings)
        channels_last(model.to(device))
        v = self.validation(job, settings)
        val_map5, val_threshold = validation_map5(
            model, v.val_set, v.truth, v.gallery_set, v.gallery_ids, device, v.grid
        )
        log.info("hub member %s fold %d: validation MAP@5 %.4f (no training)", settings.backbone, fold, val_map5)
        meta = {**meta, "size": list(settings.size), "fold": fold}
        title = f"{settings.backbone} fold {fold} (hub, untrained)"
        self.write(job, model.cpu(), meta, [untrained_row(val_map5, val_threshold)], title)
