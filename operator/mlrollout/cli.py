"""The `mlrollout` command line: one entry point, subcommands implemented where their code lives."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: mlrollout COMMAND [ARGS...]

commands:
  validate FILE...                      check manifests offline (all three kinds, multi-document YAML)
  analyze --snapshot F.json [--policy F.yaml]
                                        judge a snapshot of counts, print the verdict as JSON
  plan --rps R [--policy F.yaml] [--base-error-rate P] [--latency-p99 S]
                                        per step: requests and time to a decision, its power
  profile --output F.json DATA          build a reference profile from training data (CSV or .npy)
  crds                                  regenerate crds/ and the chart's CRDs from the models
"""


def _validate(argv: Sequence[str]) -> int:
    from mlrollout.validate import main

    return main(argv)


def _analyze(argv: Sequence[str]) -> int:
    from mlrollout.analysis import cli_main

    return cli_main(list(argv))


def _plan(argv: Sequence[str]) -> int:
    from mlrollout.plan import main

    return main(argv)


def _profile(argv: Sequence[str]) -> int:
    from mlrollout_serving.profile import cli_main

    return cli_main(list(argv))


def _crds(argv: Sequence[str]) -> int:
    from mlrollout.api.crdgen import main

    return main()


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "validate": _validate,
    "analyze": _analyze,
    "plan": _plan,
    "profile": _profile,
    "crds": _crds,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; exit 2 on unknown commands."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"mlrollout: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
