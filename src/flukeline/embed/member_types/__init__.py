"""Member types of the embed stage, registered by name (timm's registry pattern): a member's
`type` setting picks the class that builds its network (`build(settings)`), trains it for one
validation fold (`train(job)`) and rebuilds it from a weights file's description
(`from_meta(meta)`).

- `register_member_type(name)`: class decorator (subclasses of base.MemberType);
- `member_type(name)`: the registered type (unknown name: InputError listing the known ones);
- `member_type_names()`: the known names;
- `load_member(path, device)`: (network, description) of a weights file, rebuilt by the type its
  description names (files without a type are trained members).

Built in: trained, frozen_head, zero_shot (the workflow's) and hub (published re-ID descriptors
downloaded from the Hugging Face hub: an explicit opt-in, see hub.py)."""

from __future__ import annotations

from torch import nn

from flukeline.core.model_file import read_weights
from flukeline.core.tensors import channels_last
from flukeline.embed.member_types import frozen_head, hub, trained, zero_shot  # noqa: F401 (registers them)
from flukeline.embed.member_types._registry import member_type, member_type_names, register_member_type
from flukeline.embed.member_types.base import MemberType, TrainJob

__all__ = ["MemberType", "TrainJob", "load_member", "member_type", "member_type_names", "register_member_type"]


def load_member(path, device="cpu") -> tuple[nn.Module, dict]:
    """The member a weights file holds, on `device` in eval mode, with its description."""
    state, meta = read_weights(path)
    model = member_type(meta.get("type", "trained")).from_meta(meta)
    model.load_state_dict(state)
    return channels_last(model.to(device)).eval(), meta
