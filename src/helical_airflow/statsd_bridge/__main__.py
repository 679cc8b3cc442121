"""`python -m helical_airflow.statsd_bridge`: a stand-in for statsd_exporter, with the same flags.

    python -m helical_airflow.statsd_bridge --statsd.mapping-config=monitoring/statsd/mapping.yml \
        --statsd.listen-udp=127.0.0.1:9125 --web.listen-address=127.0.0.1:9102

`--capture FILE` also appends every received line to FILE (how tests/data/airflow_statsd_capture.txt
was recorded). `--check FILE...` reads StatsD lines from files instead of the network and prints, per
metric name, whether the mapping maps it, drops it or leaves it unmapped (exit 1 if any is unmapped).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from ..errors import HelicalAirflowError
from .check import check_files
from .mapping import Mapper
from .registry import Registry
from .server import UDPListener, make_http_server, parse_address


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m helical_airflow.statsd_bridge", description=__doc__.splitlines()[0])
    p.add_argument("--statsd.mapping-config", dest="mapping", help="mapping file (statsd_exporter format)")
    p.add_argument("--statsd.listen-udp", dest="udp", default=":9125", help="UDP address for StatsD lines")
    p.add_argument("--statsd.listen-tcp", dest="tcp", default="", help='must be "": the bridge speaks UDP only')
    p.add_argument("--web.listen-address", dest="web", default=":9102", help="HTTP address for /metrics")
    p.add_argument("--web.telemetry-path", dest="path", default="/metrics")
    p.add_argument("--log.level", dest="level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--capture", type=Path, help="also append every received StatsD line to this file")
    p.add_argument("--check", nargs="+", type=Path, metavar="FILE", help="report how FILEs' names map, then exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    level = {"warn": "WARNING"}.get(args.level, args.level.upper())
    logging.basicConfig(level=level, format="%(asctime)s statsd-bridge %(levelname)s %(message)s")
    log = logging.getLogger("statsd_bridge")
    try:
        mapper = Mapper.from_file(args.mapping) if args.mapping else Mapper([])
        if args.check:
            return check_files(mapper, args.check)
        if args.tcp:
            log.error("--statsd.listen-tcp=%s: the bridge listens on UDP only; pass --statsd.listen-tcp=", args.tcp)
            return 2
        registry = Registry(mapper)
        udp = UDPListener(registry, parse_address(args.udp, "--statsd.listen-udp"), args.capture)
        http = make_http_server(registry, parse_address(args.web, "--web.listen-address"), args.path)
    except HelicalAirflowError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # port taken, permission denied
        print(f"error E603: cannot listen: {exc}\n  fix: pick free ports (--statsd.listen-udp, --web.listen-address)",
              file=sys.stderr)  # fmt: skip
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave serve_forever through the finally below
    udp.start()
    log.info("%d mapping rules from %s; StatsD on udp %s, metrics on http %s%s",
             len(mapper.rules), args.mapping, args.udp, args.web, args.path)  # fmt: skip
    try:
        http.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        udp.close()
        http.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
