"""The margin loss over sampled classes (Partial FC, embed.loss.margin.classes_per_batch): which
classes a batch's softmax covers, that it is the library's loss on those classes, that a step
touches only their class weights, and that it still trains."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses

from flukeline.core.errors import InputError
from flukeline.core.training import JointOptimizer, joint
from flukeline.embed.losses import MemberLoss, SampledMarginLoss, class_weight_optimizer, margin_loss
from flukeline.embed.settings import LossSettings, MarginLossSettings


def margin_settings(kind="arcface", cap=8):
    return MarginLossSettings.from_dict({"type": kind, "scale": 16.0, "margin": 0.3, "classes_per_batch": cap})


def test_the_library_loss_covers_every_class_up_to_the_cap_and_sampling_starts_above_it():
    assert isinstance(margin_loss(margin_settings(cap=8), 8, 4), losses.ArcFaceLoss)
    assert isinstance(margin_loss(margin_settings(cap=0), 5000, 4), losses.ArcFaceLoss)
    sampled = margin_loss(margin_settings(cap=8), 9, 4)
    assert isinstance(sampled, SampledMarginLoss) and sampled.table.shape == (9, 4)
    assert margin_loss(margin_settings("subcenter_arcface", cap=8), 9, 4).table.shape == (9 * 3, 4)


def test_a_batch_samples_its_own_classes_first_then_distinct_others_to_the_cap():
    torch.manual_seed(0)
    loss = SampledMarginLoss(margin_settings(cap=10), 40, 4)
    labels = torch.tensor([7, 3, 3, 39, 7])
    classes, local = loss.sample_classes(labels)
    assert classes[:3].tolist() == [3, 7, 39]
    assert len(classes) == 10 and len(set(classes.tolist())) == 10
    assert classes.min() >= 0 and classes.max() < 40
    assert torch.equal(classes[local], labels)


def test_the_other_classes_are_drawn_uniformly():
    torch.manual_seed(1)
    loss = SampledMarginLoss(margin_settings(cap=20), 200, 4)
    labels = torch.tensor([0, 1, 2, 3])
    counts = np.zeros(200)
    for _ in range(2000):
        classes, _ = loss.sample_classes(labels)
        counts[classes[4:].numpy()] += 1
    assert counts[:4].sum() == 0
    # Each of the 196 others is drawn with probability 16/196: 163 times in 2,000 batches.
    assert counts[4:].min() > 110 and counts[4:].max() < 220


def test_a_batch_with_more_classes_than_the_cap_is_a_config_error():
    loss = SampledMarginLoss(margin_settings(cap=3), 10, 4)
    with pytest.raises(InputError, match="classes_per_batch 3"):
        loss(torch.randn(4, 4), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("kind", ["arcface", "subcenter_arcface", "cosface"])
def test_sampling_every_class_gives_the_library_loss_over_the_whole_table(kind):
    """The softmax is the same whatever the order of its classes: a sample of all of them must
    give the library loss with the whole table as W (rows gathered and labels moved correctly,
    sub-centres kept together)."""
    torch.manual_seed(2)
    settings = margin_settings(kind, cap=6)
    sampled = SampledMarginLoss(settings, 6, 5)
    whole = margin_loss(settings.replace(classes_per_batch=0), 6, 5)
    with torch.no_grad():
        whole.W.copy_(sampled.table.t())
    embeddings, labels = torch.randn(8, 5), torch.tensor([5, 0, 0, 2, 4, 4, 1, 5])
    torch.testing.assert_close(sampled(embeddings, labels), whole(embeddings, labels))


def test_a_step_moves_only_the_class_weights_the_batch_sampled():
    torch.manual_seed(3)
    loss = MemberLoss(LossSettings.from_dict({"margin": {"classes_per_batch": 4}}), 50, 6)
    head = torch.nn.Linear(10, 6)
    dense = torch.optim.AdamW(list(head.parameters()) + loss.dense_parameters(), lr=0.1)
    optimizer = joint(dense, class_weight_optimizer(loss, 0.1))
    assert isinstance(optimizer, JointOptimizer) and loss.dense_parameters() == []
    before = loss.margin.table.detach().clone()
    value = loss(head(torch.randn(4, 10)), torch.tensor([1, 1, 9, 9]))
    optimizer.zero_grad()
    value.backward()
    gradient = loss.margin.table.grad
    assert gradient.is_sparse
    touched = set(gradient.coalesce().indices()[0].tolist())
    assert len(touched) == 4 and {1, 9} <= touched
    optimizer.step()
    moved = set(torch.nonzero((loss.margin.table.detach() != before).any(dim=1)).flatten().tolist())
    assert moved == touched


def test_the_joint_optimizer_sets_each_groups_rate_and_restores_its_state():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4, 2))
    optimizer = JointOptimizer(torch.optim.AdamW([a], lr=1.0), torch.optim.SparseAdam([b], lr=1.0))
    for group in optimizer.param_groups:
        group["lr"] = 0.5
    assert [o.param_groups[0]["lr"] for o in optimizer.optimizers] == [0.5, 0.5]
    (a.sum() + torch.nn.functional.embedding(torch.tensor([1]), b, sparse=True).sum()).backward()
    optimizer.step()
    state = optimizer.state_dict()
    fresh = JointOptimizer(torch.optim.AdamW([a], lr=1.0), torch.optim.SparseAdam([b], lr=1.0))
    fresh.load_state_dict(state)
    assert fresh.optimizers[0].param_groups[0]["lr"] == 0.5
    torch.testing.assert_close(fresh.optimizers[1].state[b]["exp_avg"], optimizer.optimizers[1].state[b]["exp_avg"])


@pytest.mark.parametrize("kind", ["arcface", "subcenter_arcface"])
def test_training_on_sampled_classes_separates_fifty_identities(kind):
    """50 identities, 8 classes per batch (16% of them, about Partial FC's 10% rate): the head
    and the class weights still learn every identity."""
    torch.manual_seed(4)
    settings = LossSettings.from_dict(
        {"margin": {"type": kind, "scale": 16.0, "margin": 0.3, "classes_per_batch": 8}, "triplet": {"weight": 1.0}}
    )
    loss = MemberLoss(settings, 50, 16)
    head = torch.nn.Linear(32, 16)
    optimizer = joint(
        torch.optim.AdamW(list(head.parameters()) + loss.dense_parameters(), lr=0.01),
        class_weight_optimizer(loss, 0.01),
    )
    prototypes = torch.randn(50, 32) * 3
    for _ in range(300):
        labels = torch.randint(0, 50, (4,)).repeat_interleave(4)
        value = loss(head(prototypes[labels] + torch.randn(16, 32)), labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        labels = torch.arange(50).repeat(4)
        embeddings = torch.nn.functional.normalize(head(prototypes[labels] + torch.randn(200, 32)), dim=1)
        weights = torch.nn.functional.normalize(loss.margin.table, dim=1)
        cosine = (embeddings @ weights.t()).view(200, 50, loss.margin.columns).max(dim=2).values
    assert (cosine.argmax(dim=1) == labels).float().mean() > 0.9


@pytest.mark.parametrize("cap", [0, 4])
def test_class_weights_start_at_the_class_means_in_the_table_or_in_w(cap):
    """The frozen-head member starts each class weight at its items' mean embedding, for the
    library loss's W and for a sampled loss's table alike; new_whale items (NO_LABEL) count for
    none."""
    from flukeline.embed.frozen_head import centre_class_weights
    from flukeline.embed.recipe import NO_LABEL

    torch.manual_seed(5)
    loss = MemberLoss(LossSettings.from_dict({"margin": {"classes_per_batch": cap}}), 6, 3)
    embeddings = torch.randn(14, 3)
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, NO_LABEL, NO_LABEL])
    centre_class_weights(loss, embeddings, labels)
    weights = loss.margin.table if cap else loss.margin.W.t()
    for label in range(6):
        expected = torch.nn.functional.normalize(embeddings[torch.from_numpy(labels == label)].mean(dim=0), dim=0)
        torch.testing.assert_close(weights[label].detach(), expected)
