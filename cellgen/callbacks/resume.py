"""On resume, the learning rate given now wins over the one saved in the optimiser state.

``fit --ckpt_path last --model.init_args.lr 1e-5`` builds the model with the new rate, but Lightning then
restores the optimiser state, and with it the old rate. This callback compares the model's ``lr`` with the
checkpoint's and rescales every parameter group (and the schedulers' base rates) by their ratio, saying so.
Other changed hyperparameters are listed: they apply as built, the restored weights keep their shapes.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

IGNORED = {"_class_path", "_instantiator"}


class ResumeOverrides(Callback):
    """Apply a learning rate changed on the command line to a resumed optimiser; report other changes."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved = dict(checkpoint.get("hyper_parameters") or {})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.saved:
            return
        now = dict(pl_module.hparams)
        changed = sorted(k for k in now if k not in IGNORED and k in self.saved and now[k] != self.saved[k])
        old_lr, new_lr = self.saved.get("lr"), now.get("lr")
        if isinstance(old_lr, (int, float)) and isinstance(new_lr, (int, float)) and old_lr > 0 and old_lr != new_lr:
            scale = new_lr / old_lr
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] *= scale
                    if "initial_lr" in group:
                        group["initial_lr"] *= scale
            for config in trainer.lr_scheduler_configs:
                if hasattr(config.scheduler, "base_lrs"):
                    config.scheduler.base_lrs = [lr * scale for lr in config.scheduler.base_lrs]
            rank_zero_info(f"cellgen: resumed with learning rate {new_lr:g} (the checkpoint had {old_lr:g})")
        others = [k for k in changed if k != "lr"]
        if others:
            rank_zero_info(f"cellgen: resumed with settings changed from the checkpoint: {', '.join(others)}")
        self.saved = None
