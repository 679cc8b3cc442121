"""The StatsD client of the local stack's Airflow processes ([metrics] statsd_custom_client_path).

statsd's StatsClient sends from an unconnected UDP socket, which the kernel binds to 0.0.0.0 on a random port:
`ss -lunp` then lists every Airflow process as receiving UDP on all interfaces. This client connects its socket
to the StatsD address, so the kernel binds it to the loopback address the route picks (and it is no longer an
open, unconnected socket). Sending is unchanged; a StatsD server that is down costs nothing (errors are ignored).
"""

from __future__ import annotations

import contextlib
from typing import Any

from statsd import StatsClient


class ConnectedStatsClient(StatsClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with contextlib.suppress(OSError):
            self._sock.connect(self._addr)
