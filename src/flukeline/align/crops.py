"""Align step 2 (`align_crops`, one job per size): the aligned crop is the template's bounding box
grown by the margin, widened or heightened to the output's aspect (never stretched), composed
with the image's landmark transform: one warpAffine from the original photo per crop. Every image
also gets a box crop, which knows no template: detect's box grown by the margin, letterboxed at
one scale into the output and padded as align.padding says (flukeline.align.geometry.box_crop);
its detect mask is warped both ways when there is one (a 4th channel for the embed stage, padded
with 0). Where the detector gave masks but a photo's is empty (nothing predicted; its box then came
from the keypoints, the threshold detector or the whole photo) or absent, its detect box stands in
for the mask (filled, warped the same way): a 4-channel member needs a mask crop for every photo,
and the box is where the detector put the animal. An image without a landmark fit uses its box
crop as its crop.

Written under results/align/<W>x<H>/: crops/{aligned,box,aligned_mask,box_mask}/<split>/*.png and
align.parquet (image, split, method, n_landmarks, residual, crop_path, box_crop_path,
mask_crop_path, box_mask_crop_path), the table the embed stage reads.

With a cache folder, each photo's crop PNGs are kept under the key (photo's SHA-1, both crop
matrices, padding, size, its mask file's SHA-1), so a rerun after new photos arrive warps only
those (flukeline.core.photo_cache); the others' crops are copied from the cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flukeline.align.geometry import BOX_COLUMNS, FRAME_COLUMNS, MATRIX_COLUMNS, BoxCrop, box_crop, compose, crop_matrix
from flukeline.align.settings import DEFAULT_PADDING, check_padding, parse_size
from flukeline.align.transforms import image_table
from flukeline.align.warp import warp, warp_box_crop, write_png
from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_parquet_atomic
from flukeline.core.photo_cache import PACK_ENTRIES, PhotoCache, bytes_array, file_sha1
from flukeline.core.runtime import parallel_map, worker_count

log = logging.getLogger(__name__)


# What decides a crop besides its key's parts: bump when the warping code changes its pixels.
_CROP_VERSION = 1


def _crop_one(task) -> None:
    """Read one photo (and mask), write its aligned and box crops (and warped masks): one worker
    process's task."""
    cv2.setNumThreads(1)  # parallelism is over images
    _warp_one(*task)


def _outputs(task) -> dict[str, str | None]:
    """A task's crop files by cache entry name (aligned is box, and aligned_mask box_mask, for a
    photo without a landmark fit)."""
    crop_png, box_png, mask_png, box_mask_png = task[5], task[6], task[8], task[9]
    return {"box": box_png, "aligned": crop_png, "box_mask": box_mask_png, "aligned_mask": mask_png}


def _warp_all(tasks: list, photo_keys: list, cache: PhotoCache, threads: int) -> int:
    """Every task's crops: copied from the cache where it has them (in this process, on threads:
    the cache reads its packs once), warped by worker processes otherwise, then stored, a pack at
    a time so that a killed run keeps what it warped. Returns how many came from the cache."""

    def restore(i: int) -> str | None:
        """The task's key, or None when its crops were restored from the cache."""
        mask_path, mask_png = tasks[i][7], tasks[i][8]
        key = cache.key(photo_keys[i], file_sha1(mask_path) if mask_path else ("box" if mask_png else ""))
        found = cache.get(key)
        if found is None:
            return key
        for name, out in _outputs(tasks[i]).items():
            if out is not None:
                Path(out).write_bytes(found[name].tobytes())
        return None

    keys = parallel_map(restore, range(len(tasks)), threads) if cache.enabled else [None] * len(tasks)
    todo = [i for i, key in enumerate(keys) if key is not None] if cache.enabled else list(range(len(tasks)))
    workers = worker_count(threads)
    step = PACK_ENTRIES if cache.enabled else max(1, len(todo))
    for lo in range(0, len(todo), step):
        batch = todo[lo : lo + step]
        chunksize = max(1, min(16, len(batch) // (4 * workers)))
        parallel_map(_crop_one, [tasks[i] for i in batch], threads, processes=True, chunksize=chunksize)
        if cache.enabled:
            for i in batch:
                files = {name: out for name, out in _outputs(tasks[i]).items() if out}
                cache.put(keys[i], **{name: bytes_array(Path(out).read_bytes()) for name, out in files.items()})
            cache.flush()
    return len(tasks) - len(todo)


def box_as_mask(height: int, width: int, rect) -> np.ndarray:
    """A photo's mask standing in for an empty predicted one: its detect box (x0, y0, x1, y1,
    x1 / y1 exclusive) filled with 255."""
    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = (int(round(v)) for v in rect)
    mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 255
    return mask


def _warp_one(path, aligned, box, padding, out_size, crop_png, box_png, mask_path, mask_png, box_mask_png, rect):
    rgb = read_image_rgb(path)
    write_png(box_png, warp_box_crop(rgb, box, out_size, padding))
    if crop_png != box_png:
        write_png(crop_png, warp(rgb, aligned, out_size))
    if mask_png is None:
        return
    if mask_path is None:  # an empty or absent predicted mask: the box stands in (module docstring)
        mask = box_as_mask(rgb.shape[0], rgb.shape[1], rect)
    else:
        mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"cannot read mask {mask_path}")
    # Masks are stored at the photo's resolution (identity here); one that is not is rescaled.
    rx, ry = rgb.shape[1] / mask.shape[1], rgb.shape[0] / mask.shape[0]
    mask_to_photo = np.array([[rx, 0.0, 0.5 * rx - 0.5], [0.0, ry, 0.5 * ry - 0.5]])
    # Padding shows no animal: 0 (the mask's context stays where the photo's does), never a
    # mirrored or replicated mask.
    box_mask = BoxCrop(compose(box.matrix, mask_to_photo), box.content)
    write_png(box_mask_png, warp_box_crop(mask, box_mask, out_size, "context" if padding == "context" else "constant"))
    if mask_png != box_mask_png:
        write_png(mask_png, warp(mask, compose(aligned, mask_to_photo), out_size, cv2.BORDER_CONSTANT, 0))


def _file_names(images: pd.DataFrame) -> list[str]:
    """<stem>.png per image; the full name where two images of a split share a stem."""
    stems = pd.Series([Path(i).stem for i in images["image"]], index=images.index)
    clash = pd.DataFrame({"split": images["split"], "stem": stems}).duplicated(keep=False).to_numpy()
    return [
        f"{image.replace('.', '_')}.png" if c else f"{stem}.png"
        for image, stem, c in zip(images["image"], stems, clash)
    ]


def _box_crops(table: pd.DataFrame, margin: float, out_size) -> list[BoxCrop]:
    """Each image's box crop; the photo's size (when the table has it) spares a whole-photo box
    the margin."""
    boxes = table[BOX_COLUMNS].to_numpy(np.float64)
    if {"width", "height"} <= set(table.columns):
        sizes = table[["width", "height"]].to_numpy(np.float64)
    else:
        sizes = [None] * len(table)
    return [box_crop(box, margin, out_size, photo_size) for box, photo_size in zip(boxes, sizes)]


def crop_images(
    images: pd.DataFrame,
    transforms: pd.DataFrame,
    masks: pd.DataFrame | None,
    size: str,
    margin: float,
    crops_dir,
    threads: int = 1,
    padding: str = DEFAULT_PADDING,
    cache_dir=None,
) -> pd.DataFrame:
    """Write every image's crops at one size; returns the table the embed stage reads. cache_dir:
    per-photo crops kept across runs (used when `images` has the photos' sha1)."""
    out_size = parse_size(size)
    check_padding(padding)
    columns = [c for c in ("image", "split", "path", "width", "height", "sha1") if c in images.columns]
    use_cache = cache_dir is not None and "sha1" in columns
    table = images[columns].merge(transforms, on=["image", "split"], how="left", validate="one_to_one")
    if table["method"].isna().any():
        missing = table.loc[table["method"].isna(), "image"].tolist()[:5]
        raise ValueError(f"align table has no transform for {missing} ...")
    mask_paths = [None] * len(table)
    # A detector that gave masks: every photo gets a mask crop, its box where its mask is empty.
    with_masks = masks is not None and bool(len(masks))
    if with_masks:
        found = masks.dropna(subset=["mask_path"])
        if "area" in found:
            found = found[found["area"] > 0]
        lookup = {(i, s): str(p) for i, s, p in found[["image", "split", "mask_path"]].itertuples(index=False)}
        mask_paths = [lookup.get((i, s)) for i, s in zip(table["image"], table["split"])]
        empty = [image for image, path in zip(table["image"], mask_paths) if path is None]
        if empty:
            log.info(
                "%d of %d photos have an empty or no predicted mask (e.g. %s): their mask crops are their detect box",
                len(empty),
                len(table),
                ", ".join(map(str, empty[:3])),
            )
    rects = table[BOX_COLUMNS].to_numpy(np.float64)
    crops_dir = Path(crops_dir).resolve()
    names = _file_names(table)
    folders = {kind: crops_dir / kind for kind in ("aligned", "box", "aligned_mask", "box_mask")}
    for folder in folders.values():
        for split in table["split"].unique():
            (folder / split).mkdir(parents=True, exist_ok=True)
    frames = table[FRAME_COLUMNS].drop_duplicates().to_numpy(np.float64)
    if len(frames) > 1:
        raise ValueError(f"align table mixes template frames {frames.tolist()}")
    frame = tuple(frames[0]) if len(frames) else (0.0, 0.0, 1.0, 1.0)
    transforms = table[MATRIX_COLUMNS].to_numpy(np.float64).reshape(-1, 2, 3)
    aligned_matrices = crop_matrix(transforms, frame, margin, out_size)
    box_crops = _box_crops(table, margin, out_size)
    tasks, rows, photo_keys = [], [], []
    per_image = zip(table.itertuples(index=False), names, mask_paths, aligned_matrices, box_crops, rects)
    for row, name, mask_path, aligned, box, rect in per_image:
        aligned_fit = row.method == "landmarks"
        box_png = str(folders["box"] / row.split / name)
        crop_png = str(folders["aligned"] / row.split / name) if aligned_fit else box_png
        box_mask_png = mask_png = None
        if with_masks:
            box_mask_png = str(folders["box_mask"] / row.split / name)
            mask_png = str(folders["aligned_mask"] / row.split / name) if aligned_fit else box_mask_png
        if use_cache:
            geometry = np.round(np.concatenate([aligned.ravel(), box.matrix.ravel(), box.content]), 6).tolist()
            # The box rectangle: a mask that stands in is drawn from it.
            extra = f"|{np.round(rect, 3).tolist()}" if with_masks and not mask_path else ""
            photo_keys.append(f"{row.sha1}|{geometry}|{padding}|{out_size}|{bool(mask_path)}{extra}")
        tasks.append(
            (
                row.path,
                aligned,
                box,
                padding,
                out_size,
                crop_png,
                box_png,
                mask_path,
                mask_png,
                box_mask_png,
                tuple(rect),
            )
        )
        rows.append(
            (row.image, row.split, row.method, row.n_landmarks, row.residual, crop_png, box_png, mask_png, box_mask_png)
        )
    cache = PhotoCache(cache_dir if use_cache else None, "align", {"version": _CROP_VERSION})
    from_cache = _warp_all(tasks, photo_keys, cache, threads)
    if use_cache:
        warped = len(tasks) - from_cache
        log.info("crops of %d photos: %d from the cache %s, %d warped", len(tasks), from_cache, cache_dir, warped)
    out = pd.DataFrame(
        rows,
        columns=[
            "image",
            "split",
            "method",
            "n_landmarks",
            "residual",
            "crop_path",
            "box_crop_path",
            "mask_crop_path",
            "box_mask_crop_path",
        ],
    )
    out = out.astype(
        {
            "image": "string",
            "split": "string",
            "method": "string",
            "n_landmarks": "int64",
            "residual": "float64",
            "crop_path": "string",
            "box_crop_path": "string",
            "mask_crop_path": "string",
            "box_mask_crop_path": "string",
        }
    )
    log.info(
        "cropped %d images to %s (%d aligned, %d with masks; box crops padded: %s)",
        len(out),
        size,
        int((out["method"] == "landmarks").sum()),
        int(out["mask_crop_path"].notna().sum()),
        padding,
    )
    return out


def run(
    train_path,
    test_path,
    transforms_path,
    masks_path,
    size,
    margin,
    table_path,
    crops_dir,
    threads=1,
    padding=DEFAULT_PADDING,
    cache_dir=None,
) -> None:
    train, test = pd.read_parquet(train_path), pd.read_parquet(test_path)
    images = image_table(train, test)
    if "sha1" in train and "sha1" in test:  # the cache's key (ingest's tables always have it)
        images["sha1"] = pd.concat([train["sha1"], test["sha1"]], ignore_index=True).to_numpy()
    masks = pd.read_parquet(masks_path) if masks_path else None
    table = crop_images(
        images, pd.read_parquet(transforms_path), masks, size, margin, crops_dir, threads, padding, cache_dir
    )
    write_parquet_atomic(table, table_path)
