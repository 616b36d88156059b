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


def test_each_embed_module_imports_alone():
    code = "import importlib, sys; importlib.import_module(sys.argv[1])"
    # Two interpreters at a time (each spends seconds importing torch): half the wall time on 2 cores.
    modules = list(_embed_modules())
    for lo in range(0, len(modules), 2):
        batch = modules[lo : lo + 2]
        running = [
            subprocess.Popen([sys.executable, "-c", code, m], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for m in batch
        ]
        for module, process in zip(batch, running):
            _, stderr = process.communicate()
            assert process.returncode == 0, f"{module}: {stderr[-2000:]}"


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
