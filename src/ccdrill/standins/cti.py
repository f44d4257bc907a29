"""CTI stand-in (docs/telephony.md, "CTI").

Publishes ``cti.control {"cti", "host", "boards", "ts"}`` every ``heartbeat_ms`` to its KCXP; a
board is controlled while these heartbeats naming it keep arriving. While KCXP is gone the
heartbeats are dropped and counted, and the client reconnects every 0.5 s.
Stdlib only (runs in the lab hosts).
"""

from __future__ import annotations

import asyncio
import socket
import time

from .common import ConfigError, KcxpClient, Service, parse_hostport, run_service, validate_config


class Cti(Service):
    kind = "cti"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "kcxp": str, "ctl_port": int, "boards": list},
                              {"heartbeat_ms": 200})
        if not all(isinstance(b, str) and b for b in cfg["boards"]):
            raise ConfigError(f"config <config>: key 'boards' must be a list of board names, "
                              f"got {cfg['boards']!r}")
        if cfg["heartbeat_ms"] <= 0:
            raise ConfigError(f"config <config>: key 'heartbeat_ms' must be > 0, got {cfg['heartbeat_ms']!r}")
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.kcxp_addr = parse_hostport(cfg["kcxp"], "kcxp")
        self.boards: list[str] = list(cfg["boards"])
        self.heartbeat_s = cfg["heartbeat_ms"] / 1000.0
        self.host = socket.gethostname()
        self.kcxp = KcxpClient(*self.kcxp_addr, name=f"{self.name}-kcxp")
        self.heartbeats_sent = 0
        self.heartbeats_dropped = 0
        self.last_heartbeat: float | None = None

    def stats(self) -> dict:
        s = super().stats()
        s.update({
            "host": self.host,
            "boards": self.boards,
            "heartbeat_ms": round(self.heartbeat_s * 1000),
            "heartbeats_sent": self.heartbeats_sent,
            "heartbeats_dropped": self.heartbeats_dropped,
            "last_heartbeat": self.last_heartbeat,
            "kcxp_connected": self.kcxp.connected,
            "kcxp": self.kcxp.stats(),
        })
        return s

    def heartbeat(self) -> None:
        msg = {"cti": self.name, "host": self.host, "boards": self.boards, "ts": time.time()}
        if self.kcxp.publish("cti.control", msg):
            self.heartbeats_sent += 1
            self.last_heartbeat = msg["ts"]
        else:
            self.heartbeats_dropped += 1

    async def run(self) -> None:
        await self.start_ctl(self.ctl_port)
        await self.kcxp.start()
        # Fixed-rate schedule (no drift), without bursts to catch up after a stall.
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.heartbeat()
            next_at = max(next_at + self.heartbeat_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def close(self) -> None:
        await self.kcxp.close()
        await super().close()


def main(argv: list[str] | None = None) -> None:
    run_service(Cti, argv)


if __name__ == "__main__":
    main()
