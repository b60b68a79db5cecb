"""Command line: `amp-gateway serve [--config FILE]` (also `python -m gateway serve`)."""

from __future__ import annotations

import argparse
import sys

from gateway import __version__
from gateway.config import ConfigError, load_settings


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amp-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"amp-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the gateway")
    serve_parser.add_argument("--config", help="YAML settings file (or GATEWAY_CONFIG)")
    serve_parser.add_argument(
        "--workers",
        type=_positive,
        help="worker processes (or GATEWAY_WORKERS; default: the CPUs available to the container)",
    )
    check = commands.add_parser("check-config", help="validate settings and exit")
    check.add_argument("--config", help="YAML settings file (or GATEWAY_CONFIG)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        print(f"amp-gateway: configuration error: {err}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration ok")
        return 0

    from gateway.serve import serve

    return serve(settings, args.workers)


if __name__ == "__main__":
    sys.exit(main())
