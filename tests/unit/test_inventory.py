"""The inventory schema: the lab's own inventory passes; each kind of wrong value stops with the file
and the key named (checked on copies of the real inventory with one value broken)."""

import shutil
from pathlib import Path

import pytest
import yaml

from ccdrill.lab.inventory import InventoryError, load_inventory

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "inventory" / "lab"


@pytest.fixture
def inv_copy(tmp_path):
    dst = tmp_path / "inv"
    shutil.copytree(REAL, dst)
    return dst


def edit(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_lab_inventory_is_valid():
    inv = load_inventory(REAL, ROOT / "images")
    assert set(inv.sites) == {"sh", "sz"}
    assert inv.router.name == "wan" and set(inv.router.sites) == {"sh", "sz"}
    assert len(inv.hosts_of("ipc")) == 2
    assert inv.address("sh-pbx") == "10.231.1.20"


def test_subnet_prefix_override_moves_every_address(monkeypatch):
    monkeypatch.setenv("CCDRILL_SUBNET_PREFIX", "10.240")
    inv = load_inventory(REAL)
    assert inv.address("sz-db") == "10.240.2.40" and inv.address("wan", "sh") == "10.240.1.254"


def test_bad_subnet_prefix_is_refused(monkeypatch):
    monkeypatch.setenv("CCDRILL_SUBNET_PREFIX", "10.240.1")
    with pytest.raises(InventoryError, match="CCDRILL_SUBNET_PREFIX"):
        load_inventory(REAL)


def test_a_lab_without_the_migration_hosts(monkeypatch):
    full = load_inventory(REAL)
    monkeypatch.setenv("CCDRILL_LAB_WITHOUT", "migration_only")
    inv = load_inventory(REAL)
    gone = set(full.hosts) - set(inv.hosts)
    assert gone == {"sh-chat", "sz-chat", "sh-ta", "sz-ta", "ta-files", "sh-notify", "sz-notify", "sh-mail",
                    "sz-mailgw", "sz-sms"}
    # The IPC upgrade keeps what it needs, the data tier included (Saturday afternoon's Shenzhen test).
    assert {"sh-ipc-old", "sh-ipc-new", "sh-pbx", "sh-db", "sz-db", "sh-app", "sz-app"} <= set(inv.hosts)
    assert inv.hosts_of("webchat") == [] and inv.hosts_of("ipc") == full.hosts_of("ipc")
    assert inv.limit() == "all:localhost:!migration_only"
    assert inv.limit("website") == "website:!migration_only"
    assert full.limit() == "all:localhost" and full.without == ()


@pytest.mark.parametrize(("value", "expected"), [
    ("no_such_group", "'no_such_group' is not a group"),
    ("lab", "'lab' is not a group .* other than lab"),
    ("wan_router", "would leave out the WAN router wan"),
    ("ipc", "all.children.ipc: needs 2 host.*has 0 .CCDRILL_LAB_WITHOUT=ipc leaves hosts out"),
])
def test_a_lab_without_names_what_it_cannot_leave_out(monkeypatch, value, expected):
    monkeypatch.setenv("CCDRILL_LAB_WITHOUT", value)
    with pytest.raises(InventoryError, match=expected):
        load_inventory(REAL)


def test_playbooks_on_a_lab_without_some_hosts_are_limited(monkeypatch):
    from ccdrill.cli import _playbook_cmd

    monkeypatch.setenv("CCDRILL_LAB_WITHOUT", "migration_only")
    cmd, _env, _root = _playbook_cmd("site.yml", "x", REAL, None)
    assert cmd[-2:] == ["--limit", "all:localhost:!migration_only"]
    cmd, _env, _root = _playbook_cmd("webchat.yml", "x", REAL, ["--limit", "website", "-e", "a=1"])
    assert cmd[-4:] == ["--limit", "website:!migration_only", "-e", "a=1"]
    monkeypatch.delenv("CCDRILL_LAB_WITHOUT")
    cmd, _env, _root = _playbook_cmd("site.yml", "x", REAL, None)
    assert "--limit" not in cmd


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["all"]["children"]["lab"]["hosts"]["sh-pbx"].update(site="bj"),
         r"hosts.yml: all.children.lab.hosts.sh-pbx.site: unknown site 'bj'"),
        (lambda d: d["all"]["children"]["lab"]["hosts"]["sh-pbx"].update(ip_index=10),
         r"all.children.lab.hosts.sh-pbx.ip_index: 10 on site sh is already used by carrier"),
        (lambda d: d["all"]["children"]["lab"]["hosts"]["sh-pbx"].update(ip_index=300),
         r"all.children.lab.hosts.sh-pbx.ip_index: 300 must be"),
        (lambda d: d["all"]["children"]["lab"]["hosts"]["sh-pbx"].pop("image"),
         r"all.children.lab.hosts.sh-pbx.image: missing"),
        (lambda d: d["all"]["children"]["lab"]["hosts"]["sh-pbx"].update(image="nosuch"),
         r"all.children.lab.hosts.sh-pbx.image: no recipe"),
        (lambda d: d["all"]["children"]["pbx"].update(hosts={}),
         r"all.children.pbx: needs 1 host\(s\) for the plan, has 0"),
        (lambda d: d["all"]["children"]["ipc"]["hosts"].pop("sh-ipc-new"),
         r"all.children.ipc: needs 2 host\(s\) for the plan, has 1"),
        (lambda d: d["all"]["children"]["ipc"]["hosts"].update({"sh-ghost": None}),
         r"all.children.ipc.hosts.sh-ghost: not declared in group lab"),
        (lambda d: d["all"]["children"]["lab"]["hosts"]["wan"].update(router=False),
         r"exactly one host needs 'router: true', found 0"),
        (lambda d: d["all"]["children"]["lab"]["hosts"]["wan"].update(site="sh"),
         r"the router must sit on every site \(missing sz\)"),
    ],
)
def test_wrong_host_values_name_the_file_and_key(inv_copy, change, expected):
    edit(inv_copy / "hosts.yml", change)
    with pytest.raises(InventoryError, match=expected) as err:
        load_inventory(inv_copy, ROOT / "images")
    assert str(inv_copy / "hosts.yml") in str(err.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["lab_sites"]["sz"].update(subnet="{{ lab_net_prefix }}.1.128/25"),
         r"lab_sites.sz.subnet: .* must be a /24"),
        (lambda d: d["lab_sites"]["sz"].update(subnet="{{ lab_net_prefix }}.1.0/24"),
         r"lab_sites.sz.subnet: .*overlaps lab_sites.sh.subnet"),
        (lambda d: d["lab_sites"]["sz"].update(subnet="10.999.0.0/24"), r"lab_sites.sz.subnet: .*not an IPv4 subnet"),
        (lambda d: d.update(wan_delay_ms=-3), r"wan_delay_ms: -3 must be a number of ms"),
        (lambda d: d.update(wan_loss=2), r"wan_loss: 2 must be from 0 to 1"),
    ],
)
def test_wrong_site_values_name_the_file_and_key(inv_copy, change, expected):
    f = inv_copy / "group_vars" / "all" / "lab.yml"
    edit(f, change)
    with pytest.raises(InventoryError, match=expected) as err:
        load_inventory(inv_copy, ROOT / "images")
    assert str(f) in str(err.value)


def test_unreadable_yaml_is_named(inv_copy):
    (inv_copy / "hosts.yml").write_text("all: [unclosed\n")
    with pytest.raises(InventoryError, match="hosts.yml: not valid YAML"):
        load_inventory(inv_copy)


def test_cli_reports_the_error_and_exits_2(inv_copy, capsys):
    from ccdrill.cli import main

    edit(inv_copy / "hosts.yml", lambda d: d["all"]["children"]["lab"]["hosts"]["carrier"].update(site="xx"))
    assert main(["inventory", str(inv_copy)]) == 2
    assert "carrier.site: unknown site 'xx'" in capsys.readouterr().err
