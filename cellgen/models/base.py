"""Base LightningModule of every cellgen model: the CLI's subclass-mode root."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN/Inf, so a run stops with a message instead of wasting hours."""


class CellgenModule(L.LightningModule):
    """Shared training plumbing: one ``compute_loss`` per model, finite-loss guard, consistent logging.

    Subclasses implement :meth:`compute_loss` returning the scalar loss and a dict of extra scalars to log;
    the base class handles the train/val steps so every model logs ``train/loss`` and ``val/loss``.
    """

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, extra = self.compute_loss(batch, "train")
        self._check_finite(loss, batch_idx)
        self._log("train", loss, extra)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, extra = self.compute_loss(batch, "val")
        self._log("val", loss, extra)
        return loss

    def _check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"{type(self).__name__}: loss is {loss.item()} at step {self.global_step} (batch {batch_idx}); "
                "lower the learning rate or check the input data for NaNs, then resume with --ckpt_path last"
            )

    def _log(self, stage: str, loss: torch.Tensor, extra: dict[str, torch.Tensor]) -> None:
        on_step = stage == "train"
        metrics = {f"{stage}/loss": loss, **{f"{stage}/{key}": value for key, value in extra.items()}}
        # Validation values are averaged over the epoch and across DDP ranks; training values per step.
        self.log_dict(metrics, prog_bar=False, on_step=on_step, on_epoch=not on_step, sync_dist=not on_step)
        self.log(
            f"{stage}_loss",
            loss,
            prog_bar=True,
            on_step=on_step,
            on_epoch=not on_step,
            sync_dist=not on_step,
            logger=False,
        )
