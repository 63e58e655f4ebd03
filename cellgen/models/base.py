"""Base LightningModule of every cellgen model: the CLI's subclass-mode root."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn


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


def keep_keys_flat(owner: nn.Module, child: str) -> None:
    """Save and load ``owner.<child>``'s entries without the ``<child>.`` prefix.

    A LightningModule that keeps its state in one plain module (e.g. a
    :class:`~cellgen.diffusion.model.DenoisingDiffusion`) still writes the checkpoint keys it had before that
    module existed (``net.*``, ``ema_net.*``, ``ema_updates``), so checkpoints from before and after load alike.
    """
    inner = getattr(owner, child)
    members = [*inner.named_parameters(recurse=False), *inner.named_buffers(recurse=False), *inner.named_children()]
    names = frozenset(name for name, _ in members)
    head = f"{child}."

    def rename(state_dict: dict, prefix: str, old: object) -> None:
        items = list(state_dict.items())
        state_dict.clear()
        for key, value in items:
            state_dict[old(key) if key.startswith(prefix) else key] = value

    def on_save(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        rename(state_dict, prefix, lambda k: prefix + k[len(prefix + head) :] if k.startswith(prefix + head) else k)

    def on_load(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
        def nest(key: str) -> str:
            rest = key[len(prefix) :]
            return prefix + head + rest if rest.split(".", 1)[0] in names else key

        rename(state_dict, prefix, nest)

    owner.register_state_dict_post_hook(on_save)
    owner.register_load_state_dict_pre_hook(on_load)


def signature_defaults(cls: type) -> dict[str, Any]:
    """``{argument: default}`` of ``cls.__init__``: where a nested model (BVDM's ``ddpm``) finds unset values."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def with_defaults(cls: type, given: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """``given`` (BVDM's ``name`` group) completed with ``cls``'s signature defaults; unknown keys are an error."""
    defaults = signature_defaults(cls)
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(unknown)}; {cls.__name__} takes {', '.join(defaults)}")
    return {**defaults, **(given or {})}


def build_from(cls: type, settings: Mapping[str, Any], **fixed: Any) -> Any:
    """``cls(**fixed, **settings)`` with only the settings ``cls`` takes (a LightningModule's lr stays behind)."""
    names = set(inspect.signature(cls.__init__).parameters) - {"self", *fixed}
    return cls(**fixed, **{key: value for key, value in settings.items() if key in names})
