"""The ``cellgen`` command: LightningCLI for fit/validate/test/predict plus a few typed extra commands.

Extra commands are plain functions dispatched through jsonargparse, so they take ``--config`` too. They
are named here as ``module:attribute`` strings and imported only when used, keeping ``--help`` fast.

Every command ends through one error path: library code raises ordinary exceptions naming the file and the
problem, and :func:`main` prints them as one ``cellgen: error: ...`` line with exit status 2 (130 for Ctrl-C,
1 for a bug). Parsers raise instead of printing a usage dump, and config files are read up front so that a
YAML syntax error names its file and line. ``CELLGEN_DEBUG=1`` keeps the tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    "sample": (
        "cellgen.commands.sample:sample",
        "write N videos of any length (TIFF + GIF grid) from a video diffusion checkpoint",
    ),
    "evaluate": (
        "cellgen.commands.evaluate:EVALUATE",
        "score results: ctc, downstream, fid/fvd, morphology, mitosis, video (a checkpoint's FID/FVD)",
    ),
    "estimate-k": ("cellgen.commands.events:estimate_k", "estimate event length and the detector's k"),
    "mitosis-sweep": ("cellgen.commands.events:mitosis_sweep", "the Phan et al. k x frames experiment"),
    "check-event-lengths": (
        "cellgen.commands.events:check_event_lengths",
        "M1's normal-cell map vs the lineage: annotated event lengths and the map's gaps at divisions",
    ),
    "detect-mitoses": (
        "cellgen.commands.detect:detect_mitoses",
        "detect mitoses in any movie with a MitosisDetector checkpoint (t,y,x,score CSV + GIF)",
    ),
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


# --------------------------------------------------------------------------------------------- LightningCLI


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


def check_run_inputs(config: Any) -> None:
    """What ``fit/validate/test/predict`` check right after parsing, before a seed is set or a class is built
    (so bad input prints nothing but its one error line): ``--ckpt_path last`` becomes the newest ``last*.ckpt``
    of the run (the checkpoint folder, or anywhere under ``trainer.default_root_dir``: each run opens a new
    ``lightning_logs/version_N`` and Lightning would look only there); the checkpoint is opened safely and its
    model class compared with the config's; the sequences pass the shared CTC validation; a GPU accelerator
    needs a GPU."""
    import torch

    from cellgen.data.ctc import checked_sequence
    from cellgen.models.checkpoint import find_last_checkpoint, read_checkpoint

    ckpt = config.get("ckpt_path")
    if ckpt in ("last", "last-or-new"):
        where = _get(config, "checkpoint.dirpath"), _get(config, "trainer.default_root_dir")
        try:
            ckpt = str(find_last_checkpoint(*where))
            print(f"cellgen: resuming from {ckpt}")
        except CellgenInputError:
            if ckpt == "last":
                raise
            ckpt = None
            print(
                f"cellgen: no last.ckpt under {where[0] or where[1] or '.'}; starting afresh (--ckpt_path last-or-new)"
            )
        config["ckpt_path"] = ckpt
    if ckpt and ckpt not in ("best", "hpc", "registry"):
        read_checkpoint(ckpt, expect_class=_get(config, "model.class_path"))
    for path in _get(config, "data.init_args.sequences") or []:
        checked_sequence(path)
    accelerator = str(_get(config, "trainer.accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise CellgenInputError(
            None, f"--trainer.accelerator {accelerator}: no CUDA device on this machine", "use cpu or auto"
        )


@contextlib.contextmanager
def _foreign_weights_are_input_errors(args: list[str]) -> Iterator[None]:
    """A checkpoint of the right class whose weights do not fit the model the config builds (another version of
    cellgen, or other sizes in the config) fails deep in ``load_state_dict``; say so in one line naming it."""
    try:
        yield
    except RuntimeError as exc:
        if "loading state_dict" not in str(exc):
            raise
        ckpt = next((a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")), None)
        if ckpt is None and "--ckpt_path" in args[:-1]:
            ckpt = args[args.index("--ckpt_path") + 1]
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CellgenInputError(
            ckpt,
            f"checkpoint weights do not fit the model the config builds ({first})",
            "use the config of the run that wrote it, or train afresh",
        ) from exc


def run_lightning(args: list[str]) -> None:
    """Run LightningCLI in subclass mode over the cellgen base classes, with :func:`check_run_inputs`."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from cellgen.callbacks.resume import ResumeOverrides
    from cellgen.callbacks.run_files import RunConfigSaver
    from cellgen.data.base import CellgenDataModule
    from cellgen.models.base import CellgenModule

    class CellgenCLI(LightningCLI):
        def init_parser(self, **kwargs: Any):  # noqa: ANN202 (LightningArgumentParser)
            # Raise on bad options (main() prints one line) instead of printing the whole usage and exiting.
            return super().init_parser(exit_on_error=False, **kwargs)

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            # Always keep a last.ckpt so that any long run can resume with --ckpt_path last.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": True})

        def parse_arguments(self, parser, args) -> None:  # noqa: ANN001
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            if subcommand:
                check_run_inputs(self.config[subcommand])
                init_args = _get(self.config[subcommand], "model.init_args") or {}
                self.model_overrides = {k: init_args[k] for k in model_options_given(list(args)) if k in init_args}

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            # Unset, the folder would follow the logger (W&B: <save_dir>/<project>/<run id>/checkpoints), so
            # `--ckpt_path last` would find nothing once a logger config is stacked: pin it to the run's root.
            if config.checkpoint.dirpath is None:
                root = config.trainer.default_root_dir or "runs"
                config.checkpoint.dirpath = str(Path(root) / "checkpoints")
            # LightningCLI has just merged the checkpoint's hyperparameters over the config; options given on the
            # command line (a lowered --model.lr for a resumed run) win over the checkpoint's values.
            init_args = _get(config, "model.init_args")
            for key, value in getattr(self, "model_overrides", {}).items():
                if init_args is not None and init_args.get(key) != value:
                    print(f"cellgen: --model.{key} {value} (command line) replaces {init_args.get(key)} (checkpoint)")
                    init_args[key] = value

        def instantiate_trainer(self, **kwargs: Any):  # noqa: ANN202 (Trainer)
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(ResumeOverrides())  # the lowered --model.lr reaches the restored optimiser
            return trainer

    _import_models()
    try:
        with warnings.catch_warnings(), _foreign_weights_are_input_errors(args):
            # `args` is always given (configs are resolved first); Lightning warns whenever sys.argv is not empty.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
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


# --------------------------------------------------------------------------------------------- extra commands


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
        components,
        args=_underscore_options(args),
        prog=f"cellgen {name}",
        as_positional=name in POSITIONAL_COMMANDS,
        parser_class=_one_line_parser(),
    )
    return result if isinstance(result, int) else 0


# --------------------------------------------------------------------------------------------- one error path

MAX_LINE = 400


def debug_mode() -> bool:
    """True when ``CELLGEN_DEBUG`` asks for the original exceptions and tracebacks."""
    return os.environ.get("CELLGEN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line_parser() -> type:
    """A jsonargparse parser class that raises on bad options instead of printing the whole usage and exiting."""
    from jsonargparse import ArgumentParser

    class OneLineErrorParser(ArgumentParser):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (jsonargparse's own signature)
            kwargs["exit_on_error"] = False
            super().__init__(*args, **kwargs)

    return OneLineErrorParser


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """Collapse whitespace (jsonargparse and YAML messages span lines) and cap the length."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_paths(args: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_files(args: list[str]) -> None:
    """Read every ``--config`` file once so that a missing file or a YAML syntax error names the file and line."""
    import yaml

    for value in _config_paths(args):
        path = Path(value).expanduser()
        if not path.exists():
            if any(c in value for c in "{}:\n"):
                continue  # an inline YAML/JSON value, which jsonargparse accepts as well
            raise CellgenInputError(path, "config file not found", "check the path, e.g. configs/tiny/bvdm.yaml")
        if not path.is_file():
            raise CellgenInputError(path, "config is a folder", "pass a .yaml file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CellgenInputError(path, "config is not UTF-8 text", "save it as UTF-8 YAML") from exc
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise CellgenInputError(path, f"YAML syntax error{where}: {problem}", "fix the YAML there") from exc
        if content is not None and not isinstance(content, dict):
            raise CellgenInputError(path, "config must be a YAML mapping of options", "e.g. 'trainer: {max_steps: 10}'")


def classify(exc: BaseException, command: str) -> tuple[int, str]:
    """Exit status and the one-line message for an exception that ended ``cellgen COMMAND``."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted (rerun the command: fit resumes with --ckpt_path last, synthesize skips done work)"
    if isinstance(exc, CellgenInputError):
        return 2, str(exc)
    if isinstance(exc, ValueError) and isinstance(exc.__cause__ or exc.__context__, CellgenInputError):
        # jsonargparse re-raises what a config class's __init__ refused as its own ValueError over every Union member
        return 2, str(exc.__cause__ or exc.__context__)
    if isinstance(exc, argparse.ArgumentError):
        message = re.sub(r"^Problems parsing config\s*:?\s*", "", str(exc))
        # A subclass-mode option error lists every Union member; keep the class that was meant and its problem.
        meant = re.search(r"(Problem with given class_path .*?)(?:\s+- Expected a|$)", message, re.S)
        if meant:
            key = re.match(r'\s*(Parser key "[^"]+":)', message)
            message = f"{key.group(1) + ' ' if key else ''}{meant.group(1)}"
        return 2, f"{command}: {message} (see `cellgen {command} --help`)"
    if isinstance(exc, OSError) and exc.filename:
        return 2, f"{exc.filename}: {exc.strerror or exc} (check the path and its permissions)"
    if isinstance(exc, FloatingPointError):
        return 2, str(exc)
    if type(exc).__name__ == "MisconfigurationException":
        return 2, f"{command}: {exc} (check the trainer options)"
    return 1, (
        f"unexpected {type(exc).__name__} in `cellgen {command}`: {exc} "
        "(rerun with CELLGEN_DEBUG=1 for the traceback and report it)"
    )


def report_error(exc: BaseException, command: str) -> int:
    """Print ``cellgen: error: <one line>`` to stderr and return the exit status."""
    code, message = classify(exc, command)
    print(f"cellgen: error: {one_line(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cellgen`` console script; bad input ends in one line and exit status 2.

    ``CELLGEN_DEBUG=1`` lets the original exception (and its traceback) through instead.
    """
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
        check_config_files(args)
        if args[0] in EXTRA_COMMANDS:
            return run_extra(args[0], args[1:])
        if args[0] not in LIGHTNING_COMMANDS and not args[0].startswith("-"):
            raise CellgenInputError(None, f"unknown command {args[0]!r}", "`cellgen --help` lists the commands")
        run_lightning(args)
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        if debug_mode():
            raise
        return report_error(exc, args[0])


if __name__ == "__main__":
    sys.exit(main())
