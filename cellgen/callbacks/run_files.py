"""Where one run's own files go (resolved config, sample previews) and how they reach W&B.

``trainer.log_dir`` is a per-run folder for the CSV logger (``<root>/lightning_logs/version_N``) but the shared
``save_dir`` for a ``WandbLogger``, where the next run would overwrite the last one's ``config.yaml``. Runs
logged to W&B therefore keep their files in ``<save_dir>/<project>/<run id>/``, the folder Lightning itself
uses for W&B runs. wandb is imported only when a ``WandbLogger`` is in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback


def wandb_logger(trainer: L.Trainer):  # noqa: ANN201 (WandbLogger | None; not imported at module level)
    """The trainer's first ``WandbLogger``, or None."""
    from lightning.pytorch.loggers import WandbLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def run_directory(trainer: L.Trainer) -> Path:
    """This run's own folder: the W&B run's ``<save_dir>/<project>/<run id>``, else the first logger's log_dir.

    No collective call (``trainer.log_dir`` broadcasts), so rank 0 may call it alone.
    """
    logger = wandb_logger(trainer)
    if logger is not None:
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(logger.version)
    first = trainer.loggers[0] if trainer.loggers else None
    return Path(getattr(first, "log_dir", None) or getattr(first, "save_dir", None) or trainer.default_root_dir)


def log_gifs(trainer: L.Trainer, key: str, gifs: Sequence[Path]) -> None:
    """Send GIF files to W&B as videos under ``key`` (nothing without a ``WandbLogger``)."""
    logger = wandb_logger(trainer)
    if logger is None or not gifs:
        return
    import wandb  # only with a W&B logger; from files, so moviepy is not needed

    videos = [wandb.Video(str(path), format="gif") for path in gifs]
    logger.experiment.log({key: videos, "trainer/global_step": trainer.global_step})


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config in the run's own folder and log all of it (trainer settings too) to every logger.

    Models log only their own hyperparameters; the logged ``cli`` entry adds the data, trainer and checkpoint
    settings, so a W&B run shows everything needed to repeat it.
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = run_directory(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, folder / self.config_filename, skip_none=False, overwrite=True)
        resolved = self.config.clone()
        resolved.pop("config", None)  # the list of files given; their contents are the rest
        for logger in trainer.loggers:
            logger.log_hyperparams({"cli": resolved.as_dict()})
