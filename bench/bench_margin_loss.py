"""`python -m bench --only margin`: the cost of one training step of a frozen-head member (its
linear head, the margin loss and the batch-hard triplet loss, the optimizer step) against the
number of classes, with every class in every batch's softmax (`classes_per_batch: 0`) and with
sampled classes (the default, Partial FC; flukeline.embed.losses).

An epoch of P x K batches visits every class once, so it takes classes / P steps: with every class
in the softmax a step grows with the classes and the epoch with their square; with sampled classes
a step stays the same and the epoch grows linearly. The epoch column is steps x the measured mean
step (features computed once, as the frozen-head member trains; 1 thread)."""

from __future__ import annotations

import time

import torch

from bench.common import environment

# Classes with mirrored twins: the demo (296 ids), the kaggle preset cut to 8,000 photos (1,354),
# Kaggle 2019's 5,004 ids, and three times that.
CLASS_COUNTS = (592, 2708, 10008, 30024)
QUICK_CLASS_COUNTS = (592, 2708)


def step_seconds(classes: int, classes_per_batch: int, steps: int, seed: int = 0) -> float:
    """Mean seconds of one step (forward, backward, optimizer) at the default frozen-head shapes:
    1,024 pooled trunk features -> 256-d head, P=16 identities x K=4 images + 8 new_whale items."""
    from flukeline.core.training import joint
    from flukeline.embed.losses import MemberLoss, class_weight_optimizer
    from flukeline.embed.settings import LossSettings

    torch.manual_seed(seed)
    margin = {"type": "arcface", "scale": 30.0, "margin": 0.5, "classes_per_batch": classes_per_batch}
    loss = MemberLoss(LossSettings.from_dict({"margin": margin, "triplet": {"weight": 1.0}}), classes, 256)
    head = torch.nn.Linear(1024, 256)
    optimizer = joint(
        torch.optim.AdamW(list(head.parameters()) + loss.dense_parameters(), lr=1e-3, weight_decay=2e-4),
        class_weight_optimizer(loss, 1e-3),
    )
    features = torch.randn(72, 1024)
    elapsed = 0.0
    for step in range(steps + 2):  # two warm-up steps
        labels = torch.cat([torch.randperm(classes)[:16].repeat_interleave(4), torch.full((8,), -1)])
        started = time.perf_counter()
        value = loss(head(features), labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if step >= 2:
            elapsed += time.perf_counter() - started
    return elapsed / steps


def margin(reference) -> tuple[dict, str]:
    from flukeline.embed.settings import MarginLossSettings

    default = MarginLossSettings().classes_per_batch
    counts = QUICK_CLASS_COUNTS if reference.quick else CLASS_COUNTS
    steps = 5 if reference.quick else 30
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for classes in counts:
            for cap in (0, default):
                seconds = step_seconds(classes, cap, steps)
                rows.append(
                    {
                        "classes": classes,
                        "classes_per_batch": cap,
                        "sampled": bool(cap and classes > cap),
                        "step_ms": 1000 * seconds,
                        "epoch_s": seconds * classes / 16,
                    }
                )
    finally:
        torch.set_num_threads(previous)
    lines = [
        "| classes | classes_per_batch | softmax covers | ms per step | s per epoch (classes / 16 steps) |",
        "|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        covers = f"{row['classes_per_batch']:,} sampled" if row["sampled"] else "every class"
        lines.append(
            f"| {row['classes']:,} | {row['classes_per_batch']:,} | {covers} | {row['step_ms']:.1f} | "
            f"{row['epoch_s']:.2f} |"
        )
    return {"rows": rows, "steps": steps, "threads": 1, "environment": environment()}, "\n".join(lines) + "\n"
