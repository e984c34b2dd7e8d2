"""`python -m emulator --host 127.0.0.1 --port 8765`: a local stand-in for both upstream APIs."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from common.logs import LogConfigError, log_file_option
from common.logs import apply as apply_logging_file
from emulator.faults import ENDPOINTS, FAULT_KINDS, Fault, FaultBoard, parse_fault_option
from emulator.market import Market
from emulator.server import Emulator, make_server

LOG_CONFIG = Path("config/logging/emulator.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description=(
            "Serve CoinMarketCap (/v1/cryptocurrency/listings/latest, /v2/cryptocurrency/quotes/historical) "
            "and CryptoCompare (/asset/v1/top/list, /data/top/totalvolfull, /data/v2/histominute, /data/v2/histohour) "
            "from a "
            "deterministic emulated market on one origin. Faults can also be changed while it runs: "
            "PUT /_emulator/faults with {ENDPOINT: {kind, rate, times, latency_ms, retry_after_seconds, "
            "timeout_seconds}}, PUT /_emulator/config with {cmc_plan}."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--universe", type=int, default=3000, help="number of assets, up to 100000 (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="market seed; same seed, same market (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-ms", type=int, default=0, help="added latency on every endpoint (default: %(default)s)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="ENDPOINT=KIND[:RATE[:TIMES]]",
        help=f"inject a fault; repeatable. ENDPOINT: {', '.join(ENDPOINTS)}. KIND: {', '.join(FAULT_KINDS)}. "
        "RATE: probability per request (default 1). TIMES: fail this many requests, then heal.",
    )
    parser.add_argument(
        "--cmc-plan",
        default="standard",
        choices=["basic", "hobbyist", "startup", "standard", "professional", "enterprise"],
        help="CMC plan; 'basic' gets error 1006 on historical endpoints (default: %(default)s)",
    )
    parser.add_argument(
        "--log-config",
        type=Path,
        default=Path(os.environ.get("EMULATOR_LOG_CONFIG") or LOG_CONFIG),
        help="logging file, dictConfig in YAML (default: $EMULATOR_LOG_CONFIG or %(default)s)",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("LOG_LEVEL"), help="overrides the file's levels (default: $LOG_LEVEL)"
    )
    parser.add_argument(
        "--log-file",
        type=log_file_option,
        default=log_file_option(os.environ.get("LOG_FILE")),
        help="redirects the file's file handlers here ({pid} allowed); 'off' drops them (default: $LOG_FILE)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 1 <= args.universe <= 100_000:
        raise SystemExit("--universe must be between 1 and 100000")
    try:
        apply_logging_file(args.log_config, level=args.log_level, file=args.log_file)
    except LogConfigError as error:
        raise SystemExit(str(error)) from None
    faults = FaultBoard(seed=args.seed)
    for option in args.fault:
        try:
            faults.set(*parse_fault_option(option))
        except ValueError as error:
            raise SystemExit(f"--fault {option}: {error}") from None
    for endpoint in ENDPOINTS if args.latency_ms else ():
        faults.faults.setdefault(endpoint, Fault()).latency_ms = args.latency_ms
    server = make_server(args.host, args.port, Emulator(Market(args.universe, args.seed), faults, args.cmc_plan))
    logging.getLogger("emulator").info(
        "emulating CoinMarketCap and CryptoCompare on http://%s:%d (universe %d)", args.host, args.port, args.universe
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
