"""DR-1 parity: the pure comparison of two IPC snapshots (ccdrill.checks.parity.compare), no lab."""

from __future__ import annotations

import copy

import pytest

from ccdrill.checks.parity import BoardPlace, Context, compare

PRIMARY, SECONDARY = "sh-ipc-new", "sh-ipc-old"
ADDR = {PRIMARY: "10.231.1.32", SECONDARY: "10.231.1.31"}
CTX = Context(PRIMARY, SECONDARY, ADDR,
              {"board0": BoardPlace(PRIMARY, 5061, 9061, 60), "board1": BoardPlace(SECONDARY, 5062, 9062, 30),
               "fax1": BoardPlace(PRIMARY, 5070, 9070, 4), "fax0": BoardPlace(SECONDARY, 5070, 9070, 4)})
CODE = {"common.py": "a" * 64, "voiceboard.py": "b" * 64, "kcxp.py": "c" * 64}


def program(name: str, module: str, autostart: bool = True) -> dict[str, str]:
    return {"command": f"python3 -m ccdrill.standins.{module} --config /etc/ccdrill/{name}.json",
            "autostart": str(autostart).lower(), "autorestart": "false", "startsecs": "1", "stopsignal": "TERM",
            "stdout_logfile": f"/var/log/supervisor/{name}.log", "environment": 'PYTHONPATH="/opt/ccdrill"'}


def board(name: str, host: str, sip: int, ctl: int, cabled: int) -> dict:
    return {"name": name, "ipc": host, "listen": "0.0.0.0", "sip_port": sip, "ctl_port": ctl, "channels": 60,
            "cabled": cabled, "span_size": 30, "pools": None, "pbx": "sh-pbx:5060", "seat_uri": "sip:seat@sh-pbx",
            "kcxp": "127.0.0.1:7100", "advertise": ADDR[host], "control_timeout_ms": 1000}


def fax(name: str, host: str) -> dict:
    return {"name": name, "ipc": host, "sip_port": 5070, "ctl_port": 9070, "ports": 4, "kcxp": "127.0.0.1:7100",
            "advertise": ADDR[host], "control_timeout_ms": 1000}


COMMON = {
    "cti": {"name": "cti", "kcxp": "127.0.0.1:7100", "ctl_port": 9300, "heartbeat_ms": 200,
            "boards": ["board0", "board1", "fax1", "fax0"]},
    "ivr": {"name": "ivr", "kcxp": "127.0.0.1:7100", "ctl_port": 9400, "prompts": ["welcome", "menu"],
            "announcement": None},
}
DBCONN = {"host": "sh-db", "port": "5432", "dbname": "callcenter", "user": "ccdrill", "password": "x"}


def primary() -> dict:
    return {"python": "3.11.2", "code": dict(CODE), "errors": [], "dbconn": dict(DBCONN),
            "programs": {"kcxp": program("kcxp", "kcxp"), "kcbp": program("kcbp", "kcbp"), "cti": program("cti", "cti"),
                         "ivr": program("ivr", "ivr"), "board0": program("board0", "voiceboard"),
                         "fax1": program("fax1", "faxboard")},
            "configs": {**copy.deepcopy(COMMON),
                        "kcxp": {"name": "kcxp", "listen": "0.0.0.0", "port": 7100, "ctl_port": 9200, "upstream": None},
                        "kcbp": {"name": "kcbp", "ctl_port": 9500, "dbconn": "/etc/ccdrill/dbconn.ini",
                                 "kcxp": "127.0.0.1:7100"},
                        "board0": board("board0", PRIMARY, 5061, 9061, 60), "fax1": fax("fax1", PRIMARY)}}


def secondary() -> dict:
    s = primary()
    s["programs"] = {"kcxp": program("kcxp", "kcxp"), "kcxp-copy": program("kcxp-copy", "kcxp", False),
                     "kcbp": program("kcbp", "kcbp"), "kcbp-copy": program("kcbp-copy", "kcbp", False),
                     "cti": program("cti", "cti", False), "ivr": program("ivr", "ivr", False),
                     "board1": program("board1", "voiceboard"), "fax0": program("fax0", "faxboard")}
    s["configs"] = {**copy.deepcopy(COMMON),
                    "kcxp": {"name": "kcxp", "listen": "0.0.0.0", "port": 7100, "ctl_port": 9200,
                             "upstream": f"{ADDR[PRIMARY]}:7100"},
                    "kcxp-copy": {"name": "kcxp-copy", "listen": ADDR[SECONDARY], "port": 7100, "ctl_port": 9200,
                                  "upstream": None},
                    "kcbp": {"name": "kcbp", "ctl_port": 9500, "dbconn": "/etc/ccdrill/dbconn.ini",
                             "kcxp": f"{ADDR[PRIMARY]}:7100"},
                    "kcbp-copy": {"name": "kcbp-copy", "ctl_port": 9500, "dbconn": "/etc/ccdrill/dbconn.ini",
                                  "kcxp": f"{ADDR[SECONDARY]}:7100"},
                    "board1": board("board1", SECONDARY, 5062, 9062, 30), "fax0": fax("fax0", SECONDARY)}
    return s


def diffs(a: dict, b: dict) -> list[tuple[str, str]]:
    return [(d.what, d.key) for d in compare(a, b, CTX).differences]


def test_the_target_arrangement_has_no_difference():
    rep = compare(primary(), secondary(), CTX)
    assert rep.differences == []
    # the per-IPC keys were checked by rule, not skipped: they count as compared
    assert rep.compared["config_keys"] > 40 and rep.compared["code_files"] == 4


def test_autostart_is_not_a_version_difference():
    # who runs what (CTI started on the primary only) is DR-2's business, not a parity difference
    a, b = primary(), secondary()
    assert a["programs"]["cti"]["autostart"] != b["programs"]["cti"]["autostart"]
    assert diffs(a, b) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda a, b: b["code"].update({"voiceboard.py": "f" * 64}), ("code", "voiceboard.py")),
    (lambda a, b: b["code"].pop("kcxp.py"), ("code", "kcxp.py")),
    (lambda a, b: b.update(python="3.12.1"), ("runtime", "python3")),
    (lambda a, b: b["configs"]["cti"].update(heartbeat_ms=500), ("cti", "heartbeat_ms")),
    (lambda a, b: b["configs"]["ivr"].update(announcement="upgrade-notice"), ("ivr", "announcement")),
    (lambda a, b: b["configs"]["board1"].update(control_timeout_ms=3000),
     ("driver board0/board1", "control_timeout_ms")),
    (lambda a, b: b["configs"]["board1"].update(pools={"inbound": 30}), ("driver board0/board1", "pools")),
    (lambda a, b: b["configs"]["fax0"].update(ports=2), ("fax driver fax1/fax0", "ports")),
    (lambda a, b: b["dbconn"].update(host="sz-db"), ("kcbp dbconn.ini", "host")),
    (lambda a, b: b["programs"]["ivr"].update(command="python3.12 -m ccdrill.standins.ivr --config x.json"),
     ("ivr program", "command")),
    (lambda a, b: b["programs"]["board1"].update(autorestart="true"), ("driver program board0/board1", "autorestart")),
    (lambda a, b: b["programs"]["kcxp-copy"].update(environment=""), ("kcxp program kcxp/kcxp-copy", "environment")),
])
def test_every_difference_is_named(mutate, expected):
    a, b = primary(), secondary()
    mutate(a, b)
    assert expected in diffs(a, b)


@pytest.mark.parametrize("mutate, expected", [
    # a board's own keys must be that IPC's own values, not merely "allowed to differ"
    (lambda a, b: b["configs"]["board1"].update(cabled=60), ("driver board1", "cabled")),
    (lambda a, b: b["configs"]["board1"].update(advertise=ADDR[PRIMARY]), ("driver board1", "advertise")),
    (lambda a, b: b["configs"]["board1"].update(ipc=PRIMARY), ("driver board1", "ipc")),
    (lambda a, b: b["configs"]["board1"].update(sip_port=5061), ("driver board1", "sip_port")),
    (lambda a, b: a["configs"]["board0"].update(ctl_port=9062), ("driver board0", "ctl_port")),
    (lambda a, b: a["configs"]["fax1"].update(advertise=ADDR[SECONDARY]), ("fax driver fax1", "advertise")),
    # the DR arrangement of the middleware
    (lambda a, b: b["configs"]["kcxp"].update(upstream=None), ("kcxp", "upstream")),
    (lambda a, b: a["configs"]["kcxp"].update(upstream=f"{ADDR[SECONDARY]}:7100"), ("kcxp", "upstream")),
    (lambda a, b: b["configs"]["kcbp"].update(kcxp="127.0.0.1:7100"), ("kcbp", "kcxp")),
    (lambda a, b: b["configs"]["kcxp-copy"].update(upstream=f"{ADDR[PRIMARY]}:7100"), ("kcxp-copy", "upstream")),
    (lambda a, b: b["configs"]["kcxp-copy"].update(listen=ADDR[PRIMARY]), ("kcxp-copy", "listen")),
    (lambda a, b: b["configs"]["kcbp-copy"].update(kcxp=f"{ADDR[PRIMARY]}:7100"), ("kcbp-copy", "kcxp")),
    (lambda a, b: b["configs"]["kcxp-copy"].update(port=7101), ("kcxp-copy vs the primary's kcxp", "port")),
])
def test_per_ipc_keys_are_checked_by_rule(mutate, expected):
    a, b = primary(), secondary()
    mutate(a, b)
    assert expected in diffs(a, b)


def test_a_copy_listening_on_every_address_still_points_at_the_secondary():
    a, b = primary(), secondary()
    b["configs"]["kcxp-copy"]["listen"] = "0.0.0.0"
    b["configs"]["kcbp-copy"]["kcxp"] = "127.0.0.1:7100"
    assert diffs(a, b) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda a, b: (b["programs"].pop("ivr"), b["configs"].pop("ivr")), ("ivr", "installed")),
    (lambda a, b: (b["programs"].pop("kcxp-copy"), b["configs"].pop("kcxp-copy")), ("kcxp-copy", "installed")),
    (lambda a, b: (a["programs"].update({"kcbp-copy": program("kcbp-copy", "kcbp")}),
                   a["configs"].update({"kcbp-copy": dict(b["configs"]["kcbp-copy"])})), ("kcbp-copy", "installed")),
    (lambda a, b: b["programs"].update({"ivr2": program("ivr2", "ivr")}), ("ivr", "program ivr2")),
    (lambda a, b: (b["programs"].pop("board1"), b["configs"].pop("board1")), ("driver", "installed")),
])
def test_programs_installed_on_one_ipc_only_are_named(mutate, expected):
    a, b = primary(), secondary()
    mutate(a, b)
    assert expected in diffs(a, b)


def test_a_board_the_layout_does_not_put_there_is_named():
    a, b = primary(), secondary()
    b["programs"]["board7"] = program("board7", "voiceboard")
    b["configs"]["board7"] = board("board1", SECONDARY, 5062, 9062, 30) | {"name": "board7"}
    assert ("driver board7", "name") in diffs(a, b)


def test_differences_name_both_values():
    a, b = primary(), secondary()
    b["configs"]["cti"]["heartbeat_ms"] = 500
    (d,) = compare(a, b, CTX).differences
    assert (d.primary, d.secondary) == (200, 500)
    assert "cti: heartbeat_ms" in str(d) and "200" in str(d) and "500" in str(d)
