"""match.local.mirrors: a query's SIFT descriptors mirrored by permuting their bins
(local_features.mirror_sift) are those of the mirrored photo, so a photo of the other side of a
symmetric individual verifies against the catalogue with mirrors on and not without."""

import numpy as np
import pytest
from helpers_local import rotated_crop, textured

from flukeline.core.errors import InputError
from flukeline.match.local_features import mirror_sift, pack_features, root_sift, sift_keypoints, unmirrored
from flukeline.match.local_matchers import SiftMatcher


def _paired(image):
    """SIFT of an image and of its mirror, keypoints paired by position: (own, mirrored photo's)."""
    xy, own = sift_keypoints(image, 500, 0.01)
    xy_m, mirrored = sift_keypoints(np.ascontiguousarray(image[:, ::-1]), 500, 0.01)
    xy_m[:, 0] = image.shape[1] - 1 - xy_m[:, 0]
    gap = np.linalg.norm(xy[:, None] - xy_m[None], axis=2)
    nearest = gap.argmin(axis=1)
    same = gap[np.arange(len(xy)), nearest] < 0.5
    return own[same], mirrored[nearest[same]]


def test_permuted_bins_are_the_mirrored_photos_descriptors():
    own, mirrored = _paired(textured(3))
    assert len(own) > 30
    permuted = np.linalg.norm(root_sift(mirror_sift(own)) - root_sift(mirrored), axis=1)
    unpermuted = np.linalg.norm(root_sift(own) - root_sift(mirrored), axis=1)
    assert np.median(permuted) < 0.1 < 0.3 < np.median(unpermuted)
    # Mirroring twice is the identity.
    np.testing.assert_array_equal(mirror_sift(mirror_sift(own)), own)


def test_a_mirrored_sighting_verifies_only_with_the_mirrored_query():
    gallery = sift_keypoints(textured(5), 500, 0.01)
    query_image = np.ascontiguousarray(rotated_crop(textured(5), degrees=8)[:, ::-1])  # the other side
    table = pack_features("sift", "256x128", ["q"], [sift_keypoints(query_image, 500, 0.01)])
    matcher = SiftMatcher()
    plain = matcher.match(matcher.prepare(*table.get("q")), gallery)
    mirrored = table.with_mirrors()
    xy, descriptors = mirrored.get("q")
    half = len(xy) // 2
    assert len(descriptors) == 2 * len(table.get("q")[1])
    # The mirrored features' points are mirrored too, and unmirrored gives the photo's back.
    np.testing.assert_allclose(unmirrored(xy[half:]), xy[:half], atol=1e-4)
    both = matcher.match(matcher.prepare(xy, descriptors), gallery)
    assert plain.inliers < 12 and both.inliers >= 30
    # The inliers are mirrored features (rows past the query's own).
    assert (both.query_features >= half).mean() > 0.9


def test_only_sift_descriptors_can_be_mirrored():
    table = pack_features(
        "aliked_lightglue", "128x64", ["q"], [(np.zeros((2, 2), np.float32), np.zeros((2, 128), np.float16))]
    )
    with pytest.raises(InputError, match="needs SIFT descriptors"):
        table.with_mirrors()
