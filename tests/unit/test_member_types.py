"""The embed member-type registry (flukeline.embed.member_types): names, the error for an unknown
one, every registered type's weights file read back by load_member, and no import cycle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flukeline.embed
from flukeline.core.errors import InputError
from flukeline.embed.member_types import MemberType, load_member, member_type, member_type_names
from flukeline.embed.model import save_model

# One description per registered type, as its train() writes it (a new type adds its own).
METAS = {
    "trained": {"backbone": "resnet10t", "embedding_dim": 8, "in_chans": 4, "dropout": 0.1},
    "zero_shot": {"type": "zero_shot", "backbone": "resnet10t", "embedding_dim": 0, "in_chans": 3, "dropout": 0.0},
    "frozen_head": {
        "type": "frozen_head",
        "backbone": "mobilenetv2_100",
        "block": 2,
        "pool": 2,
        "embedding_dim": 8,
        "in_chans": 3,
    },
    "hub": {
        "type": "hub",
        "source": "timm",
        "architecture": "resnet10t",
        "model_args": {},
        "embedding_dim": 512,
        "input_size": None,
    },
}


def test_the_registry_knows_the_built_in_types_and_names_them_for_an_unknown_one():
    assert member_type_names() == sorted(METAS)
    assert all(isinstance(member_type(name), MemberType) for name in METAS)
    with pytest.raises(
        InputError, match=r"'trainde' is not registered \(known: frozen_head, hub, trained, zero_shot\)"
    ):
        member_type("trainde")


@pytest.mark.parametrize("name", sorted(METAS))
def test_every_type_rebuilds_the_network_its_weights_file_holds(tmp_path, name):
    torch.manual_seed(0)
    meta = {**METAS[name], "size": [32, 16], "fold": 0}
    model = member_type(name).from_meta(meta)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))  # not the constructor's initial values
    save_model(model, tmp_path / "model.safetensors", meta)
    loaded, loaded_meta = load_member(tmp_path / "model.safetensors")
    assert type(loaded) is type(model) and loaded_meta == meta and not loaded.training
    saved = model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    images = torch.rand(2, meta["in_chans"] if "in_chans" in meta else 3, 16, 32)
    with torch.no_grad():
        assert loaded(images).shape == (2, loaded.embedding_dim)


def _embed_modules() -> list[str]:
    root = Path(flukeline.embed.__file__).parent
    return sorted(
        "flukeline." + ".".join(path.relative_to(root.parent).with_suffix("").parts).replace(".__init__", "")
        for path in root.rglob("*.py")
    )


# One interpreter imports the heavy third-party libraries once, then imports each flukeline.embed
# module in a forked child of its own, where no flukeline module is loaded yet: what is tested is
# the package's own import order (a cycle, a missing import), at the cost of a fork per module
# instead of an interpreter and a torch import per module (100 s on 2 loaded cores).
_IMPORT_EACH_ALONE = """
import importlib, os, sys, traceback
import albumentations, cv2, matplotlib.pyplot, numpy, pandas, pytorch_metric_learning  # noqa: F401
import safetensors.torch, timm, torch, tqdm, yaml  # noqa: F401
assert not any(name.startswith("flukeline") for name in sys.modules)
failed = []
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(module)
print("failed:", " ".join(failed))
sys.exit(1 if failed else 0)
"""


def test_each_embed_module_imports_alone():
    modules = list(_embed_modules())
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE, *modules], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.strip() == "failed:"


def test_embed_modules_import_each_other_without_a_cycle():
    """Module-level imports among flukeline.embed modules form no cycle, and model.py (the network
    every type builds on) does not import the types."""
    root = Path(flukeline.embed.__file__).parent
    modules = set(_embed_modules())
    graph = {}
    for module in modules:
        path = root.parent / Path(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        imported = set()
        for node in ast.parse(path.read_text()).body:  # top level only: lazy imports are allowed
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported |= {n for n in names if n in modules and n != module}
        graph[module] = imported
    assert not any(m.startswith("flukeline.embed.member_types") for m in graph["flukeline.embed.model"])

    def visit(module, path):
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        for nxt in graph[module]:
            visit(nxt, [*path, module])

    for module in graph:
        visit(module, [])
