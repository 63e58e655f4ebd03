"""The ``cellgen`` command: LightningCLI for fit/validate/test/predict plus a few typed extra commands.

Extra commands are plain functions dispatched through jsonargparse, so they take ``--config`` too. They
are named here as ``module:attribute`` strings and imported only when used, keeping ``--help`` fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

from cellgen.data.errors import CellgenInputError

LIGHTNING_COMMANDS = {
    "fit": "train a model (cellgen fit --config configs/bvdm.yaml)",
    "validate": "run one validation epoch",
    "test": "run one test epoch",
    "predict": "synthesise / predict with a trained model (--ckpt_path ...)",
}

# name -> ("module:attribute", one-line help). Later capabilities register here. Required arguments are
# options (``--ckpt PATH``) except for the commands in POSITIONAL_COMMANDS (``cellgen check-ctc DIR``).
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("cellgen.commands.data:PREPARE_DATA", "generate the demo dataset or cache patch videos"),
    "check-ctc": ("cellgen.commands.data:check_ctc", "validate a CTC sequence folder (exit 0 valid, 2 not)"),
    "synthesize": (
        "cellgen.commands.synthesize:synthesize",
        "write N annotated synthetic sequences from a BVDM checkpoint",
    ),
    "evaluate": (
        "cellgen.commands.evaluate:EVALUATE",
        "score results: ctc, downstream, fid/fvd, morphology, mitosis",
    ),
    "estimate-k": ("cellgen.commands.events:estimate_k", "estimate event length and the detector's k"),
    "mitosis-sweep": ("cellgen.commands.events:mitosis_sweep", "the Phan et al. k x frames experiment"),
    "bvdm-ablation": (
        "cellgen.commands.bvdm_ablation:bvdm_ablation",
        "BVDM Table 2: SDEdit start steps (and no DDPM) -> downstream SEG/TRA/DET and FID",
    ),
    "export": ("cellgen.commands.export:EXPORT", "a CTC sequence as GEFF, TrackMate XML or OME-Zarr"),
}

POSITIONAL_COMMANDS = {"check-ctc", "export"}

# Modules defining CellgenModule / CellgenDataModule subclasses; imported so that subclass mode
# can resolve short names such as ``--model MaskDDPM``.
MODEL_MODULES = [
    "cellgen.models.mask_ddpm",
    "cellgen.models.voxelmorph_fpm",
    "cellgen.models.bvdm",
    "cellgen.models.video_diffusion",
    "cellgen.models.flow_video_diffusion",
    "cellgen.models.event_length",
    "cellgen.models.mitosis_detector",
    "cellgen.models.segmentation",
    "cellgen.data.patch_video",
]


def _available(target: str) -> bool:
    module = target.split(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _resolve(target: str) -> Callable | dict:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _import_models() -> None:
    for module in MODEL_MODULES:
        if _available(module):
            importlib.import_module(module)


def configs_dir() -> Path | None:
    """The shipped configs: ``cellgen/configs`` in a wheel, the checkout's ``configs/`` in an editable install."""
    package = Path(__file__).resolve().parent
    return next((d for d in (package / "configs", package.parent / "configs") if d.is_dir()), None)


def _config_path(value: str) -> str:
    """``bvdm``, ``tiny/bvdm`` or ``configs/bvdm.yaml`` name a shipped config when no such file is here."""
    folder = configs_dir()
    if Path(value).exists() or folder is None:
        return value
    name = value.removeprefix("configs/")
    return next((str(p) for p in (folder / name, folder / f"{name}.yaml") if p.is_file()), value)


def _resolve_configs(args: list[str]) -> list[str]:
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg.startswith("--config="):
            resolved[i] = "--config=" + _config_path(arg.partition("=")[2])
        elif arg == "--config" and i + 1 < len(resolved):
            resolved[i + 1] = _config_path(resolved[i + 1])
    return resolved


COMMON_OPTIONS = [
    ("--config FILE|NAME", "a YAML config or a shipped one by name (repeat to stack; later ones win)"),
    ("--print_config", "print the resolved config and exit"),
    ("--ckpt_path PATH|last", "fit: resume (last = the checkpoint folder's last.ckpt); else: the weights"),
    ("--trainer.max_steps N", "training length in optimiser steps"),
    ("--trainer.default_root_dir DIR", "logs; checkpoints in DIR/checkpoints unless --checkpoint.dirpath"),
    ("--trainer.accelerator / .devices / .precision", "e.g. gpu / 2 / bf16-mixed"),
    ("--trainer.logger false", "no logger; stack --config logger/wandb for W&B (offline)"),
    ("--model.help CLASS", "every option of a model, e.g. --model.help BVDM"),
    ("--data.help CLASS", "every option of a data module, e.g. --data.help BVDMDataModule"),
]


def _print_lightning_help(command: str) -> None:
    """A one-screen help for fit/validate/test/predict; ``--help-all`` shows LightningCLI's full list."""
    print(f"usage: cellgen {command} --config FILE [--config FILE ...] [--SECTION.OPTION VALUE ...]\n")
    print(f"{LIGHTNING_COMMANDS[command]}. Configs stack left to right; any option may follow them.\n")
    folder = configs_dir()
    if folder is not None:
        names = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
        print(f"shipped configs ({folder}):")
        print(textwrap.fill("  ".join(names), width=100, initial_indent="  ", subsequent_indent="  ") + "\n")
    print("common options:")
    for option, text in COMMON_OPTIONS:
        print(f"  {option:<46}{text}")
    print(f"\nevery option (about 700 lines): cellgen {command} --help-all")


def _print_help() -> None:
    print("usage: cellgen COMMAND [--config FILE ...] [options]\n")
    print("cellgen: learn from a few annotated live-cell videos, synthesise many, and measure them.\n")
    print("training commands (LightningCLI; configs stack, the resolved config is saved with every run):")
    for name, text in LIGHTNING_COMMANDS.items():
        print(f"  {name:<15}{text}")
    print("\nother commands:")
    for name, (target, text) in EXTRA_COMMANDS.items():
        if _available(target):
            print(f"  {name:<15}{text}")
    print(
        "\n`cellgen COMMAND --help` describes a command's options. Example: cellgen fit --config configs/tiny/bvdm.yaml"
    )


def run_lightning(args: list[str]) -> None:
    """Run LightningCLI in subclass mode over the cellgen base classes."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from cellgen.callbacks.run_files import RunConfigSaver
    from cellgen.data.base import CellgenDataModule
    from cellgen.models.base import CellgenModule

    class CellgenCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            # Always keep a last.ckpt so that any long run can resume with --ckpt_path last.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": True})

        def before_instantiate_classes(self) -> None:
            # Unset, the folder would follow the logger (W&B: <save_dir>/<project>/<run id>/checkpoints), so
            # `--ckpt_path last` would find nothing once a logger config is stacked: pin it to the run's root.
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.checkpoint.dirpath is None:
                root = config.trainer.default_root_dir or "runs"
                config.checkpoint.dirpath = str(Path(root) / "checkpoints")

    _import_models()
    try:
        with warnings.catch_warnings():
            # `args` is always given (configs are resolved first); Lightning warns whenever sys.argv is not empty.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            CellgenCLI(
                CellgenModule,
                CellgenDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                seed_everything_default=0,
                save_config_callback=RunConfigSaver,  # the run's own folder, also under W&B; full config logged
                save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
                # No logger default: Lightning then writes CSV logs and checkpoints under trainer.default_root_dir.
                trainer_defaults={"default_root_dir": "runs"},
                parser_kwargs={"prog": "cellgen"},
                args=args,
            )
    finally:
        # One command, one W&B run: a second in-process command (tests, notebooks) must not log into this one.
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()


def _underscore_options(args: list[str]) -> list[str]:
    """Accept ``--num-sequences`` as well as ``--num_sequences`` (jsonargparse names use underscores)."""
    fixed = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        fixed.append(arg)
    return fixed


def run_extra(name: str, args: list[str]) -> int:
    """Dispatch an extra command to its typed function(s) through jsonargparse."""
    from jsonargparse import CLI

    target, _ = EXTRA_COMMANDS[name]
    if not _available(target):
        raise CellgenInputError(None, f"command '{name}' is not available in this installation")
    components = _resolve(target)
    result = CLI(
        components, args=_underscore_options(args), prog=f"cellgen {name}", as_positional=name in POSITIONAL_COMMANDS
    )
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cellgen`` console script; bad input ends in one line and exit status 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    args = _resolve_configs(args)
    if args[0] in LIGHTNING_COMMANDS and ("--help" in args or "-h" in args):
        _print_lightning_help(args[0])
        return 0
    args = ["--help" if arg == "--help-all" else arg for arg in args]
    try:
        if args[0] in EXTRA_COMMANDS:
            return run_extra(args[0], args[1:])
        run_lightning(args)
        return 0
    except CellgenInputError as exc:
        print(f"cellgen: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"cellgen: error: {exc} (check the path; resume with --ckpt_path last)", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"cellgen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
