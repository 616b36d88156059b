import numpy as np
import pytest

from flukeline.match import combine_fold_embeddings, identity_centres, l2_normalise, predict, rank_with_new_whale, search


def test_identity_centres_are_normalised_means_of_normalised_vectors():
    emb = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=np.float32)
    names, centres = identity_centres(emb, ["b", "a", "b"])
    assert names.tolist() == ["a", "b"]
    np.testing.assert_allclose(centres[0], [0.0, 1.0], atol=1e-6)
    expected_b = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(centres[1], expected_b / np.linalg.norm(expected_b), atol=1e-6)


def test_search_returns_exact_top_k_by_inner_product():
    rng = np.random.default_rng(0)
    gallery = l2_normalise(rng.normal(size=(50, 8)))
    queries = l2_normalise(rng.normal(size=(7, 8)))
    sims, idx = search(queries, gallery, 5)
    brute = queries @ gallery.T
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.take_along_axis(brute, idx, axis=1), atol=1e-5)


@pytest.mark.parametrize(
    "sims, expected",
    [
        ([0.9, 0.8, 0.7, 0.6, 0.55], ["a", "b", "c", "d", "e"]),  # all above: new_whale falls off the top 5
        ([0.9, 0.4, 0.3, 0.2, 0.1], ["a", "new_whale", "b", "c", "d"]),
        ([0.3, 0.2, 0.1, 0.0, -0.1], ["new_whale", "a", "b", "c", "d"]),
        ([0.9, 0.8, 0.7, 0.6, 0.5], ["a", "b", "c", "d", "e"]),  # equal to the threshold is not below it
    ],
)
def test_new_whale_is_ranked_before_the_first_candidate_below_threshold(sims, expected):
    ids = np.array(["a", "b", "c", "d", "e"])
    assert rank_with_new_whale([ids], [np.array(sims)], threshold=0.5) == [expected]


def test_new_whale_goes_last_when_fewer_candidates_than_k():
    ids = np.array(["a", "b"])
    assert rank_with_new_whale([ids], [np.array([0.9, 0.8])], threshold=0.5) == [["a", "b", "new_whale"]]


def test_predict_finds_the_identity_of_a_noisy_copy_and_ignores_new_whale_gallery_images():
    rng = np.random.default_rng(1)
    centres = l2_normalise(rng.normal(size=(20, 16)))
    gallery = np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(60, 16))
    ids = np.repeat([f"w_{i}" for i in range(20)], 3)
    ids[0] = "new_whale"  # never a candidate
    queries = centres[[4, 9]] + 0.05 * rng.normal(size=(2, 16))
    ranked, best = predict(queries, gallery, ids, threshold=0.2)
    assert [r[0] for r in ranked] == ["w_4", "w_9"]
    assert all(len(r) == 5 for r in ranked) and (best > 0.9).all()
    assert all("new_whale" not in r[:1] for r in ranked)


def test_combined_fold_embeddings_give_the_mean_cosine():
    rng = np.random.default_rng(2)
    a1, a2 = l2_normalise(rng.normal(size=(3, 4))), l2_normalise(rng.normal(size=(3, 4)))
    b1, b2 = l2_normalise(rng.normal(size=(5, 6))), l2_normalise(rng.normal(size=(5, 6)))
    # Fold models may differ in dimension; queries and gallery of the same fold are compared.
    q = combine_fold_embeddings([a1, b1[:3]])
    g = combine_fold_embeddings([a2, b2[:3]])
    np.testing.assert_allclose(q @ g.T, ((a1 @ a2.T) + (b1[:3] @ b2[:3].T)) / 2, atol=1e-6)
