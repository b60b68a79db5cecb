"""Command line: `amp-gateway serve [--config FILE]` (also `python -m gateway serve`)."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway.config import ConfigError, load_settings
from gateway.logs import cap_library_loggers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amp-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML settings file (or GATEWAY_CONFIG)")
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

    import uvicorn

    from gateway.app import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s", stream=sys.stdout)
    cap_library_loggers()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
