from collections import Counter

import numpy as np
import pandas as pd
import pytest

from flukeline.core.folds import ALWAYS_TRAIN, assign_folds, validation_truth
from flukeline.core.metrics import NEW_WHALE


def kaggle_like_ids(seed: int = 1) -> list[str]:
    """A shuffled label list shaped like the Kaggle set: many new_whale, many 1-2 image whales."""
    rng = np.random.default_rng(seed)
    counts = [1] * 60 + [2] * 40 + [3] * 20 + [4] * 10 + [7] * 5 + [25] * 2
    ids = [f"w_{i:03d}" for i, count in enumerate(counts) for _ in range(count)]
    ids += [NEW_WHALE] * 150
    return [ids[i] for i in rng.permutation(len(ids))]


@pytest.mark.parametrize("n_folds", [2, 4, 5])
def test_every_validation_image_keeps_a_match_outside_its_fold(n_folds):
    ids = np.array(kaggle_like_ids())
    folds = assign_folds(ids.tolist(), n_folds=n_folds, seed=3)
    known = ids != NEW_WHALE
    for fold in range(n_folds):
        in_fold = folds == fold
        outside = set(ids[~in_fold])
        for label in ids[in_fold & known]:
            assert label in outside, f"fold {fold}: {label} has no image outside the fold"


def test_single_image_identities_always_train_and_others_are_assigned():
    ids = kaggle_like_ids()
    folds = assign_folds(ids, n_folds=4, seed=0)
    counts = Counter(ids)
    for label, fold in zip(ids, folds):
        if label != NEW_WHALE and counts[label] == 1:
            assert fold == ALWAYS_TRAIN
        else:
            assert 0 <= fold < 4


def test_identity_images_use_distinct_folds_round_robin():
    ids = ["a"] * 3 + ["b"] * 9
    folds = assign_folds(ids, n_folds=4, seed=0)
    assert len(set(folds[:3])) == 3  # 3 images -> 3 different folds
    assert sorted(Counter(folds[3:]).values()) == [2, 2, 2, 3]  # 9 images -> 3,2,2,2


def test_deterministic_for_a_seed():
    ids = kaggle_like_ids()
    first = assign_folds(ids, n_folds=4, seed=7)
    assert first.dtype == np.int64
    np.testing.assert_array_equal(first, assign_folds(ids, n_folds=4, seed=7))
    assert not np.array_equal(first, assign_folds(ids, n_folds=4, seed=8))


def test_fold_sizes_are_balanced():
    ids = kaggle_like_ids()
    for seed in range(5):
        folds = assign_folds(ids, n_folds=4, seed=seed)
        sizes = np.bincount(folds[folds != ALWAYS_TRAIN], minlength=4)
        assert sizes.max() - sizes.min() <= 3, sizes


def test_new_whale_is_spread_evenly():
    ids = kaggle_like_ids()
    folds = assign_folds(ids, n_folds=4, seed=0)
    new_whale_folds = folds[np.array(ids) == NEW_WHALE]
    sizes = np.bincount(new_whale_folds, minlength=4)
    assert sizes.sum() == 150 and sizes.max() - sizes.min() <= 1


def test_degenerate_inputs():
    assert assign_folds([], n_folds=3, seed=0).shape == (0,)
    np.testing.assert_array_equal(assign_folds(["a", "b"], n_folds=3, seed=0), [ALWAYS_TRAIN, ALWAYS_TRAIN])
    with pytest.raises(ValueError):
        assign_folds(["a", "a"], n_folds=1, seed=0)


def test_validation_truth_hand_case():
    train = pd.DataFrame(
        {
            "image": ["a1.jpg", "a2.jpg", "b1.jpg", "c1.jpg", "c2.jpg", "n1.jpg", "s1.jpg"],
            "id": ["w_a", "w_a", "w_b", "w_c", "w_c", NEW_WHALE, "w_s"],
            "fold": [0, 1, 0, 0, 0, 0, ALWAYS_TRAIN],
        }
    )
    truth = validation_truth(train, 0)
    assert truth.name == "truth"
    assert truth.to_dict() == {
        "a1.jpg": "w_a",  # a2 is outside fold 0
        "b1.jpg": NEW_WHALE,  # the only image of w_b
        "c1.jpg": NEW_WHALE,  # every w_c image is inside fold 0
        "c2.jpg": NEW_WHALE,
        "n1.jpg": NEW_WHALE,
    }
    assert validation_truth(train, 1).to_dict() == {"a2.jpg": "w_a"}


def test_validation_truth_matches_assigned_folds():
    ids = kaggle_like_ids()
    train = pd.DataFrame({"image": [f"{i}.jpg" for i in range(len(ids))], "id": ids})
    train["fold"] = assign_folds(ids, n_folds=4, seed=0)
    for fold in range(4):
        truth = validation_truth(train, fold)
        in_fold = train[train["fold"] == fold]
        # With assign_folds' guarantee, the truth is always the image's own label.
        assert truth.tolist() == in_fold["id"].tolist()


def test_photos_of_one_encounter_share_a_fold_and_no_units_keep_the_folds():

    from flukeline.data.catalogue_rows import fold_units

    ids = [f"w_{i // 6}" for i in range(60)]  # 10 whales, 6 photos each
    # Whale k's photos come from two encounters of three photos each.
    encounters = [f"e{i // 3}" for i in range(60)]
    train = pd.DataFrame({"image": [f"{i}.jpg" for i in range(60)], "encounter": encounters})
    units = fold_units(train, None)
    folds = assign_folds(ids, 4, seed=3, units=units)
    for encounter in set(encounters):
        rows = [i for i, e in enumerate(encounters) if e == encounter]
        assert len({folds[i] for i in rows}) == 1, encounter
    # Identities still spread over folds: each whale's two encounters are two units.
    assert len(set(folds.tolist())) > 1
    # Without encounters or duplicates there are no units, and the folds are the plain ones.
    assert fold_units(train.drop(columns="encounter"), None) is None
    assert fold_units(train.assign(encounter=""), None) is None
    # A duplicate group wins over the encounter for its photo.
    duplicate = fold_units(train, [7] + [None] * 59)
    assert duplicate[0] == ("duplicate", 7) and duplicate[1] == ("encounter", "e0")
