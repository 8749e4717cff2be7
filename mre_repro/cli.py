"""The `mre-repro` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from mre_repro.artifact import add_report_arguments, command_badges, command_report
from mre_repro.config import DATASET_NAMES, MODEL_KINDS, ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from mre_repro.data import DataCorruptError, DataNotFoundError
from mre_repro.engine import DataOptions, DeviceUnavailableError, NonFiniteLossError, train_run
from mre_repro.profiles import PROFILES, get_profile
from mre_repro.readings import DEFAULT_READING, READINGS, get_reading
from mre_repro.store import RunStore, RunStoreError

logger = logging.getLogger("mre_repro")

DEFAULT_OUT = Path("paper/build")

# Errors of the user's input or environment: one line on stderr, exit status 2.
USER_ERRORS = (ConfigError, DataNotFoundError, DataCorruptError, DeviceUnavailableError, RunStoreError)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        help="folder holding the data sets in torchvision's layout (default: $MRE_REPRO_DATA_ROOT, "
        "then the user cache, then Debian's dataset-fashion-mnist package)",
    )
    parser.add_argument("--download", action="store_true", help="let torchvision download missing data sets (needs network access)")
    parser.add_argument("--gpu", action="store_true", help="train on CUDA with bf16 autocast (default: CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mre-repro", description="Reproduce the claims of Mixture of Raytraced Experts (arXiv 2507.12419).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    train = commands.add_parser(
        "train",
        help="train one run and write DIR/runs/<run_id>.json",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--dataset", choices=DATASET_NAMES, default="fashion-mnist", help="data set (default: fashion-mnist)")
    train.add_argument("--model", choices=MODEL_KINDS, default="mre", help="model (default: mre)")
    train.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=f"training epochs, full passes over the training split (default: {TrainConfig.epochs})")
    train.add_argument("--seed", type=int, default=0, help="run seed: initialisation, batch order and routing noise (default: 0)")
    train.add_argument("--reading", default=DEFAULT_READING, help=f"reading of the MRE method (default: {DEFAULT_READING}); the readings are listed below")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. model.width=128; repeatable; the settings are listed below",
    )
    add_data_arguments(train)
    train.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}, relative to the current folder)")

    reproduce = commands.add_parser("reproduce", help="train a profile's grid, evaluate the claims, write the report, figures and badges")
    reproduce.add_argument("--profile", choices=list(PROFILES), default="cpu", help="smoke: seconds; cpu: real Fashion-MNIST, 5 seeds, about 20 to 30 minutes on 2 cores; paper: GPU hours")
    reproduce.add_argument("--reading", default=DEFAULT_READING, help="reading of the MRE method for the MRE runs")
    add_data_arguments(reproduce)
    reproduce.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}, relative to the current folder)")

    add_report_arguments(commands)
    return parser


def settings_epilog() -> str:
    """List every `--set` key with its default, and every reading with what it changes."""
    lines = ["settings for --set SECTION.KEY=VALUE (default in brackets):"]
    for section, values in RunConfig().to_dict().items():
        keys = ", ".join(f"{key} [{value}]" for key, value in values.items() if key != "name")
        lines.append(f"  {section}: {keys}")
    lines.append("")
    lines.append("units: model.width and model.expert_hidden in features; train.lr is Adam's step size; "
                 "train.exit_threshold is a softmax probability")
    lines.append("")
    lines.append("readings (fields that differ from the default reading):")
    default = READINGS[DEFAULT_READING]
    for name, reading in READINGS.items():
        changed = [f"{key}={value}" for key, value in vars(reading).items() if key != "name" and value != getattr(default, key)]
        lines.append(f"  {name}: {', '.join(changed) or 'the default'}")
    return "\n".join(lines)


def command_train(args: argparse.Namespace) -> int:
    config = RunConfig(
        data=DataConfig(dataset=args.dataset),
        model=ModelConfig(kind=args.model),
        reading=get_reading(args.reading),
        train=TrainConfig(epochs=args.epochs, seed=args.seed, device="cuda" if args.gpu else "cpu"),
    ).with_overrides(args.overrides)
    store = RunStore(args.out)
    options = DataOptions(data_root=args.data_root, download=args.download, synthetic_root=args.out / "synthetic-data")
    result = train_run(config, store, options)
    print(result.run_id)
    logger.info("run record: %s", store.record_path(result.run_id))
    return 0


def command_reproduce(args: argparse.Namespace) -> int:
    from mre_repro.artifact import write_artifact
    from mre_repro.claims import evaluate_and_write
    from mre_repro.reproduce import reproduce

    profile = get_profile(args.profile)
    get_reading(args.reading)
    options = DataOptions(data_root=args.data_root, download=args.download, synthetic_root=args.out / "synthetic-data")
    summary, results = reproduce(profile, args.reading, "cuda" if args.gpu else None, args.out, options)
    evaluate_and_write(results, profile, args.reading, args.out)
    write_artifact(args.out)
    print(args.out / "report.html")
    return 0


COMMANDS = {"train": command_train, "reproduce": command_reproduce, "report": command_report, "badges": command_badges}


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    # Schedulers and CI stop jobs with SIGTERM: end the way Ctrl-C does, so
    # the user sees how to resume.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        print(f"mre-repro {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"mre-repro {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"mre-repro {args.command}: interrupted; finished runs and the last finished epoch are kept, "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
