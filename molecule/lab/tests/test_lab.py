"""The two-site lab is what design.md says: supervisord everywhere, names on both sites, and a WAN that
really sits in the path (measured delay, and cutting it stops cross-site traffic only)."""

import pytest

from tests.infra.lab import ctl, host, inventory, ping

INV = inventory()
SH_HOST, SZ_HOST = "sh-pbx", "sz-db"


@pytest.mark.parametrize("name", sorted(INV.hosts))
def test_host_runs_supervisord_as_pid1(name):
    h = host(name)
    assert h.run("cat /proc/1/comm").stdout.strip() == "supervisord", f"{name}: PID 1 is not supervisord"
    assert h.run("supervisorctl pid").rc == 0, f"{name}: supervisord does not answer"


@pytest.mark.parametrize("src", [SH_HOST, SZ_HOST])
def test_every_lab_name_resolves_on_both_sites(src):
    h = host(src)
    for name in sorted(INV.hosts):
        out = h.run(f"getent hosts {name}")
        assert out.rc == 0, f"{name} does not resolve from {src}"
        addr = out.stdout.split()[0]
        expected = {INV.address(name, s) for s in INV.hosts[name].sites}
        assert addr in expected, f"{name} resolves to {addr} from {src}, expected one of {expected}"


def test_cross_site_ping_takes_the_configured_rtt():
    rtt = 2 * float(INV.vars["wan_delay_ms"])
    before = ctl("wan", INV.vars["wan_ctl_port"])["forwarded"]
    p = ping(SH_HOST, SZ_HOST, count=5)
    after = ctl("wan", INV.vars["wan_ctl_port"])["forwarded"]
    assert p["received"] == 5, p
    assert p["min_ms"] >= rtt, f"min RTT {p['min_ms']} ms < configured {rtt} ms: the WAN is not in the path"
    assert after["sh->sz"] - before["sh->sz"] >= 5 and after["sz->sh"] - before["sz->sh"] >= 5, (before, after)
    local = ping(SH_HOST, "carrier", count=3)
    assert local["received"] == 3 and local["avg_ms"] < rtt / 2, f"same-site ping slowed by the WAN: {local}"


def test_cutting_the_wan_stops_cross_site_traffic_only():
    port = INV.vars["wan_ctl_port"]
    ctl("wan", port, {"op": "cut"})
    try:
        assert ping(SH_HOST, SZ_HOST, count=3)["received"] == 0, "traffic crossed a cut WAN"
        assert ping(SH_HOST, "carrier", count=3)["received"] == 3, "Shanghai lost its own site"
        assert ping(SZ_HOST, "sz-app", count=3)["received"] == 3, "Shenzhen lost its own site"
        assert ctl("wan", port)["dropped"]["cut"] >= 3
    finally:
        ctl("wan", port, {"op": "restore"})
    assert ping(SH_HOST, SZ_HOST, count=3)["received"] == 3, "the WAN did not come back after restore"
