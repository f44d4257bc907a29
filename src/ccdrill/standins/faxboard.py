"""Fax board stand-in (docs/telephony.md, "Fax board"): 4 T.38 ports, controlled like a voice board.

Accepts only INVITEs whose SDP offers `m=image <port> udptl t38` (else 488), needs a controller
(else 503 "no controller"), and answers 503 when all ports are busy. Stdlib only.
"""

from __future__ import annotations

from .common import run_service, validate_config
from .sip import SipMessage
from .voiceboard import BoardBase, Leg, Pool, ServerTxn, _cfg_error, _nonneg_int


def offers_t38(msg: SipMessage) -> bool:
    """True if the body is SDP with an `m=image <port> udptl t38` line."""
    ctype = (msg.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/sdp" or not msg.body:
        return False
    for line in msg.body.decode("utf-8", "replace").splitlines():
        parts = line.strip().lower().split()
        if len(parts) >= 4 and parts[0] == "m=image" and parts[2] == "udptl" and "t38" in parts[3:]:
            return True
    return False


class FaxBoard(BoardBase):
    kind = "fax_board"

    REQUIRED = {"name": str, "ipc": str, "sip_port": int, "ctl_port": int, "kcxp": str}
    OPTIONAL = {"listen": "0.0.0.0", "ports": 4, "control_timeout_ms": 1000, "answer_delay_ms": 0,
                "advertise": None}

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, self.REQUIRED, self.OPTIONAL)
        ports = _nonneg_int(cfg, "ports")
        if ports == 0:
            raise _cfg_error("ports", "must be > 0", ports)
        super().__init__(cfg, self.kind)
        self.ports = Pool("ports", ports)
        self.faxes = 0
        self.refused = dict.fromkeys(("busy", "no_controller", "not_t38"), 0)
        self._sdp_cache: dict[str, bytes] = {}

    def all_pools(self) -> list[Pool]:
        return [self.ports]

    def stats(self) -> dict:
        s = self.base_stats()
        s.update({"ports": self.ports.size, "in_use": self.ports.in_use, "peak": self.ports.peak,
                  "faxes": self.faxes, "refused": dict(self.refused), "active": len(self.dialogs)})
        return s

    def _sdp(self, ip: str) -> bytes:
        b = self._sdp_cache.get(ip)
        if b is None:
            b = self._sdp_cache[ip] = (
                f"v=0\r\no={self.name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
                "m=image 10000 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxRateManagement:transferredTCF\r\n"
                "a=T38FaxUdpEC:t38UDPRedundancy\r\n").encode()
        return b

    def _on_invite(self, msg: SipMessage, tx: ServerTxn) -> None:
        if not self.controlled:
            self.refused["no_controller"] += 1
            self._refuse_invite(tx, msg, 503, "no controller")
            return
        if not offers_t38(msg):
            self.refused["not_t38"] += 1
            self._refuse_invite(tx, msg, 488, "only T.38 fax (m=image udptl t38)")
            return
        if self.ports.in_use >= self.ports.size:
            self.refused["busy"] += 1
            self._refuse_invite(tx, msg, 503, "all fax ports busy")
            return
        self._accept(self._new_uas_leg("fax", msg, tx, self.ports))

    def _answered(self, leg: Leg, msg: SipMessage) -> None:
        self.faxes += 1


def main(argv: list[str] | None = None) -> None:
    run_service(FaxBoard, argv)


if __name__ == "__main__":
    main()
