"""LightningCLI for ``cellgen fit/validate/test/predict``, with checks that run before anything is built.

Right after parsing, before the model, data and Trainer exist: ``--ckpt_path last`` is resolved to the newest
``last*.ckpt`` of the configured run (the checkpoint folder, or anywhere under ``trainer.default_root_dir``: each
run otherwise opens a new ``lightning_logs/version_N`` and Lightning would look only there), the checkpoint is
opened safely and its model class compared with the config's, and the configured sequences pass the shared CTC
validation. A bad input therefore ends in one line before the Trainer prints its banners.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from cellgen.callbacks.resume import ResumeOverrides
from cellgen.data.base import CellgenDataModule
from cellgen.data.ctc import checked_sequence
from cellgen.data.errors import CellgenInputError
from cellgen.models.base import CellgenModule
from cellgen.models.checkpoint import read_checkpoint

SPECIAL_CKPT = {"best", "hpc", "registry"}


def find_last_checkpoint(dirpath: str | None, root: str | None) -> Path:
    """Newest ``last*.ckpt`` in the checkpoint folder, or anywhere under the run's root folder.

    Raises:
        CellgenInputError: there is nothing to resume from.
    """
    where = Path(dirpath) if dirpath else Path(root or ".")
    found = list(where.glob("last*.ckpt")) if dirpath else list(where.rglob("last*.ckpt"))
    found = [p for p in found if p.is_file() and p.stat().st_size > 0]
    if not found:
        raise CellgenInputError(
            where,
            "no last.ckpt to resume from (--ckpt_path last)",
            "start without --ckpt_path to train afresh, or pass the path of a checkpoint",
        )
    return max(found, key=lambda p: p.stat().st_mtime_ns)


def model_options_given(args: list[str]) -> list[str]:
    """Names of the model's init arguments set explicitly on the command line (``--model.lr=1e-4``,
    ``--model.init_args.lr 1e-4``)."""
    names = []
    for arg in args:
        if arg.startswith("--model.") and len(arg) > len("--model."):
            key = arg[len("--model.") :].split("=", 1)[0].removeprefix("init_args.").split(".", 1)[0]
            if key not in ("class_path", "dict_kwargs") and key not in names:
                names.append(key)
    return names


def _get(namespace: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if namespace is None:
            return None
        namespace = namespace.get(key) if hasattr(namespace, "get") else getattr(namespace, key, None)
    return namespace


class CellgenCLI(LightningCLI):
    """LightningCLI over the cellgen base classes (subclass mode) with the checks described above."""

    def __init__(self, args: list[str]) -> None:
        super().__init__(
            CellgenModule,
            CellgenDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            # No logger default: Lightning then writes CSV logs and checkpoints under trainer.default_root_dir.
            trainer_defaults={"default_root_dir": "runs"},
            args=args,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # Raise on bad options (the CLI prints one line) instead of printing the whole usage and exiting.
        return super().init_parser(exit_on_error=False, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Always keep a last.ckpt so that any long run can resume with --ckpt_path last.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            self.check_inputs(self.config[subcommand])
            init_args = _get(self.config[subcommand], "model.init_args")
            given = model_options_given(list(args or []))
            self.model_overrides = {k: init_args[k] for k in given if init_args is not None and k in init_args}

    def before_instantiate_classes(self) -> None:
        # LightningCLI has just merged the checkpoint's hyperparameters over the config; options given on the
        # command line (a lowered --model.lr for a resumed run) win over the checkpoint's values.
        init_args = _get(self.config[self.subcommand], "model.init_args")
        for key, value in getattr(self, "model_overrides", {}).items():
            if init_args is not None and init_args.get(key) != value:
                print(
                    f"cellgen: --model.{key} {value} from the command line replaces {init_args.get(key)} (checkpoint)"
                )
                init_args[key] = value

    def check_inputs(self, config: Any) -> None:
        """Resolve ``--ckpt_path last``, open the checkpoint safely and validate the sequences (before any seed
        is set or class built, so a bad input prints nothing but its one error line)."""
        ckpt = config.get("ckpt_path")
        if ckpt == "last":
            dirpath, root = _get(config, "checkpoint.dirpath"), _get(config, "trainer.default_root_dir")
            ckpt = str(find_last_checkpoint(dirpath, root))
            config["ckpt_path"] = ckpt
            print(f"cellgen: resuming from {ckpt}")
        if ckpt and ckpt not in SPECIAL_CKPT:
            read_checkpoint(ckpt, expect_class=_get(config, "model.class_path"))
        for path in _get(config, "data.init_args.sequences") or []:
            checked_sequence(path)
        accelerator = str(_get(config, "trainer.accelerator") or "auto")
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise CellgenInputError(
                None, f"--trainer.accelerator {accelerator}: no CUDA device on this machine", "use cpu or auto"
            )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(ResumeOverrides())
        return trainer
