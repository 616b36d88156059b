"""The one training loop of the package: epochs of batches with automatic mixed precision on CUDA,
a checkpoint after every epoch (resumed when the settings digest matches), a progress bar, and
every random stream restarted from (seed, epoch) so that a resumed run repeats the same epochs.

The embedding members (embed/train.py), the detector (detect/train.py) and the softmax classifier
baseline (evaluate/classifier_baseline.py) differ only in what they plug in: how an epoch's
batches are drawn (`plan_epoch`), the loss of one batch (`batch_loss`), what happens around a step
(learning-rate schedule, scheduler) and at the end of an epoch (validation, SWA, early stopping).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flukeline.core.checkpoint import resume_training_state, save_training_state

log = logging.getLogger(__name__)


def autocast(device: torch.device):
    """Mixed precision for the forward pass on CUDA (fp16 with loss scaling); a no-op on the CPU.
    Losses are computed outside it, in fp32: margin losses need the precision."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda")


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The numpy stream of one epoch: the same for a run and for its resumption."""
    return np.random.default_rng([seed, epoch])


class JointOptimizer:
    """Several optimizers stepped as one (e.g. AdamW for the network and SparseAdam for a sampled
    loss's class-weight table): param_groups lists all their groups (the very dicts, so setting a
    group's lr sets it in its optimizer), and the loss scaler unscales and steps it like one
    optimizer. The checkpoint keeps each one's state."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for optimizer, own in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(own)


def joint(optimizer: torch.optim.Optimizer, extra: torch.optim.Optimizer | None):
    """`optimizer` alone, or stepped jointly with `extra` where there is one."""
    return optimizer if extra is None else JointOptimizer(optimizer, extra)


@dataclass
class TrainingLoop:
    """Run `epochs` epochs of `model` with `optimizer`; see train().

    plan_epoch(epoch, rng): reseeds whatever else draws random numbers in that epoch (augmentation)
        and returns the epoch's batches; rng is the epoch's numpy stream (epoch_rng), and torch's
        global generator is reseeded from (seed, epoch) before it is called.
    batch_loss(batch): the scalar loss of one batch (use autocast(device) for the forward pass).
    before_step(epoch, step, steps): e.g. set the learning rate of this step.
    after_step(): e.g. a per-step scheduler.
    end_epoch(epoch, history): extra fields of the finished epoch's history row (validation,
        SWA averaging); history holds the earlier rows.
    should_stop(history): early stopping, asked after the epoch's checkpoint is written.
    stateful: what the checkpoint holds besides the model, optimizer and loss scaler (schedulers,
        generators, averaged models, ...), by name.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epochs: int
    seed: int
    plan_epoch: Callable[[int, np.random.Generator], Sequence[Any]]
    batch_loss: Callable[[Any], torch.Tensor]
    checkpoint: Path | None = None
    digest: str = ""
    stateful: dict = field(default_factory=dict)
    before_step: Callable[[int, int, int], None] | None = None
    after_step: Callable[[], None] | None = None
    end_epoch: Callable[[int, list[dict]], dict] | None = None
    should_stop: Callable[[list[dict]], bool] | None = None
    desc: str = "epoch"
    progress_seconds: float = 10.0

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")

    def with_hooks(self, **hooks) -> TrainingLoop:
        """This loop with the given optional fields set (before_step, after_step, end_epoch,
        should_stop, desc, progress_seconds): the required ones go to the constructor."""
        for name, value in hooks.items():
            if name not in ("before_step", "after_step", "end_epoch", "should_stop", "desc", "progress_seconds"):
                raise TypeError(f"TrainingLoop has no hook {name!r}")
            setattr(self, name, value)
        return self

    def _state(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scaler": self.scaler, **self.stateful}

    def train(self) -> list[dict]:
        """The history, one row per epoch (epoch, loss, seconds and end_epoch's fields); with a
        checkpoint from the same settings, training continues after its last epoch."""
        start, history = 0, []
        if self.checkpoint is not None:
            start, history = resume_training_state(self.checkpoint, self.digest, **self._state())
        for epoch in range(start, self.epochs):
            history.append(self._run_epoch(epoch, history))
            if self.checkpoint is not None:
                save_training_state(self.checkpoint, epoch + 1, history, self.digest, **self._state())
            if self.should_stop is not None and self.should_stop(history):
                log.info("early stopping after epoch %d", epoch + 1)
                break
        return history

    def _run_epoch(self, epoch: int, history: list[dict]) -> dict:
        # Every random stream restarts from (seed, epoch): a resumed run repeats the epoch exactly.
        rng = epoch_rng(self.seed, epoch)
        torch.manual_seed(self.seed * 1000 + epoch)
        batches = self.plan_epoch(epoch, rng)
        self.model.train()
        started, losses = time.time(), []
        steps = len(batches)
        progress = tqdm(batches, desc=f"{self.desc} {epoch + 1}/{self.epochs}", mininterval=self.progress_seconds)
        for step, batch in enumerate(progress):
            if self.before_step is not None:
                self.before_step(epoch, step, steps)
            loss = self.batch_loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.after_step is not None:
                self.after_step()
            losses.append(loss.item())
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan")}
        if self.end_epoch is not None:
            row.update(self.end_epoch(epoch, history))
        row["seconds"] = time.time() - started
        extra = ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "loss", "seconds") and isinstance(v, float)
        )
        log.info(
            "%s %d/%d: loss %.4f%s (%.1f s)",
            self.desc,
            epoch + 1,
            self.epochs,
            row["loss"],
            f", {extra}" if extra else "",
            row["seconds"],
        )
        return row
