"""The PBX (Kamailio) as the checks read it: its counters, dispatcher state and tie trunk, via kamcmd."""

from __future__ import annotations

import re

from .world import Lab, LabError

CFG = "/etc/kamailio/kamailio.cfg"


def _kamcmd(lab: Lab, host: str, *args: str) -> str:
    rc, out, err = lab.exec(host, ["kamcmd", *args], 15)
    if rc != 0:
        raise LabError(f"{host}: kamcmd {' '.join(args)}: {(err or out).strip()}")
    return out


def counter(lab: Lab, host: str, name: str, group: str = "ccdrill") -> int:
    out = _kamcmd(lab, host, "cnt.get", group, name)
    m = re.search(r"(-?\d+)", out)
    if not m:
        raise LabError(f"{host}: counter {group}.{name}: unexpected answer {out!r}")
    return int(m.group(1))


def dispatcher_destinations(lab: Lab, host: str) -> list[dict]:
    """Every dispatcher destination: set id, URI and flags (AP = active and probing, IP = inactive...)."""
    out = _kamcmd(lab, host, "dispatcher.list")
    dests, setid = [], None
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"ID:\s*(\d+)", line)
        if m:
            setid = int(m.group(1))
        m = re.match(r"URI:\s*(\S+)", line)
        if m:
            dests.append({"set": setid, "uri": m.group(1), "flags": ""})
        m = re.match(r"FLAGS:\s*(\S+)", line)
        if m and dests:
            dests[-1]["flags"] = m.group(1)
        m = re.match(r"BODY:\s*(.*)", line)  # ATTRS: { BODY: name=...;chan=... }
        if m and dests:
            dests[-1]["attrs"] = m.group(1)
    return dests


def tie_trunk_channels(lab: Lab, host: str) -> int:
    """The tie trunk's width as the running PBX's configuration enforces it (0 = no tie trunk)."""
    rc, out, _ = lab.exec(host, ["cat", CFG], 10)
    if rc != 0:
        raise LabError(f"{host}:{CFG} unreadable")
    m = re.search(r'get_profile_size\("tie".*?\n\s*if \(\$var\(tie_used\) < (\d+)\)', out, re.S)
    return int(m.group(1)) if m else 0
