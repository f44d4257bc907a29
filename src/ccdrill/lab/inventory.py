"""The lab/production inventory: loaded once, checked against the plan's schema before any playbook runs.

Every error names the file and the key, so an operator can fix the inventory without reading code.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Groups the plan's procedures need, with the number of hosts each must hold.
REQUIRED_GROUPS: dict[str, int] = {
    "wan_router": 1,
    "lab_dns": 1,
    "carrier_line": 1,
    "pbx": 1,
    "agent_seats": 1,
    "ipc": 2,
    "database": 1,
}
# CCDRILL_LAB_WITHOUT=group[,group]: a lab without these groups' hosts (e.g. the IPC upgrade's lab
# leaves out `migration_only`); every playbook then runs with --limit all:!group.
WITHOUT_ENV = "CCDRILL_LAB_WITHOUT"
PREFIX_RE = re.compile(r"^\d{1,3}\.\d{1,3}$")
HOSTNAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class InventoryError(ValueError):
    """An inventory value the harness cannot run with; the message names the file and the key."""


@dataclass(frozen=True)
class Host:
    name: str
    sites: tuple[str, ...]
    ip_index: int
    image: str
    router: bool = False
    vars: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Site:
    name: str
    subnet: ipaddress.IPv4Network
    description: str = ""

    def address(self, index: int) -> str:
        return str(self.subnet.network_address + index)


@dataclass
class Inventory:
    path: Path
    sites: dict[str, Site]
    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    vars: dict
    without: tuple[str, ...] = ()

    def limit(self, pattern: str | None = None) -> str:
        """An Ansible --limit that leaves out the groups this lab is built without: ``pattern`` minus them,
        or without a pattern every host plus the implicit localhost (which `all` does not match)."""
        return (pattern or "all:localhost") + "".join(f":!{g}" for g in self.without)

    def address(self, host: str, site: str | None = None) -> str:
        h = self.hosts[host]
        return self.sites[site or h.sites[0]].address(h.ip_index)

    @property
    def router(self) -> Host:
        return next(h for h in self.hosts.values() if h.router)

    def hosts_of(self, group: str) -> list[str]:
        return list(self.groups.get(group, []))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InventoryError(f"{path}: top level must be a mapping, found {type(data).__name__}")
    return data


def _group_vars(root: Path) -> tuple[dict, dict[str, Path]]:
    """Merge group_vars/all (file or folder); remember which file set each key, for error messages."""
    merged: dict = {}
    origin: dict[str, Path] = {}
    gv = root / "group_vars"
    files = sorted((gv / "all").glob("*.yml")) if (gv / "all").is_dir() else []
    if (gv / "all.yml").is_file():
        files.insert(0, gv / "all.yml")
    for f in files:
        for k, v in _read_yaml(f).items():
            merged[k] = v
            origin[k] = f
    return merged, origin


def _collect_groups(node: dict, path: Path, key: str, groups: dict[str, list[str]],
                    children: dict[str, set[str]] | None = None) -> None:
    for gname, gbody in (node.get("children") or {}).items():
        gbody = gbody or {}
        if not isinstance(gbody, dict):
            raise InventoryError(f"{path}: {key}.children.{gname}: must be a mapping")
        members = list((gbody.get("hosts") or {}).keys())
        groups.setdefault(gname, [])
        groups[gname].extend(m for m in members if m not in groups[gname])
        if children is not None:
            children.setdefault(gname, set()).update((gbody.get("children") or {}).keys())
        _collect_groups(gbody, path, f"{key}.children.{gname}", groups, children)


def _hosts_under(group: str, groups: dict[str, list[str]], children: dict[str, set[str]]) -> set[str]:
    """The hosts of a group and of its child groups, as Ansible resolves them."""
    seen, todo, hosts = set(), [group], set()
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        hosts.update(groups.get(g, []))
        todo.extend(children.get(g, ()))
    return hosts


def _without(hosts_file: Path, hosts: dict, groups: dict[str, list[str]],
             children: dict[str, set[str]]) -> tuple[str, ...]:
    """Apply CCDRILL_LAB_WITHOUT: drop those groups' hosts from the lab (hosts and every group)."""
    raw = os.environ.get(WITHOUT_ENV, "").strip()
    if not raw:
        return ()
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    gone: set[str] = set()
    for n in names:
        if n not in groups or n == "lab":
            raise InventoryError(f"{WITHOUT_ENV}={raw}: {n!r} is not a group of {hosts_file}"
                                 + (" other than lab" if n == "lab" else ""))
        gone |= _hosts_under(n, groups, children)
    routers = [h for h in gone if hosts[h].router]
    if routers:
        raise InventoryError(f"{WITHOUT_ENV}={raw}: would leave out the WAN router {routers[0]}")
    for h in gone:
        del hosts[h]
    for g in groups:
        groups[g] = [m for m in groups[g] if m not in gone]
    return names


def load_inventory(root: str | Path, images_dir: str | Path | None = None) -> Inventory:
    """Load `root/hosts.yml` plus `root/group_vars/all`, validate, and return the inventory."""
    root = Path(root)
    if root.is_dir():
        # hosts.yml in a checkout; `hosts` where molecule links the project's inventory.
        hosts_file = next((root / n for n in ("hosts.yml", "hosts.yaml", "hosts") if (root / n).exists()),
                          root / "hosts.yml")
    else:
        hosts_file, root = root, root.parent
    data = _read_yaml(hosts_file)
    top = data.get("all")
    if not isinstance(top, dict):
        raise InventoryError(f"{hosts_file}: all: missing (the inventory must start with 'all:')")
    gvars, origin = _group_vars(root)

    sites_file = origin.get("lab_sites", hosts_file)
    raw_sites = gvars.get("lab_sites")
    if not isinstance(raw_sites, dict) or not raw_sites:
        raise InventoryError(f"{sites_file}: lab_sites: missing or empty (declare the sites and subnets)")
    prefix = os.environ.get("CCDRILL_SUBNET_PREFIX") or str(gvars.get("lab_net_prefix_default", ""))
    if prefix and not PREFIX_RE.match(prefix):
        raise InventoryError(f"CCDRILL_SUBNET_PREFIX / lab_net_prefix_default: {prefix!r} must look like 10.231")
    sites: dict[str, Site] = {}
    for sname, sbody in raw_sites.items():
        if isinstance(sbody, dict) and isinstance(sbody.get("subnet"), str):
            sbody = {**sbody, "subnet": sbody["subnet"].replace("{{ lab_net_prefix }}", prefix)}
        k = f"lab_sites.{sname}.subnet"
        if not isinstance(sbody, dict) or "subnet" not in sbody:
            raise InventoryError(f"{sites_file}: {k}: missing")
        try:
            net = ipaddress.IPv4Network(str(sbody["subnet"]), strict=True)
        except ValueError as exc:
            raise InventoryError(f"{sites_file}: {k}: {sbody['subnet']!r} is not an IPv4 subnet ({exc})") from exc
        if net.prefixlen != 24:
            raise InventoryError(f"{sites_file}: {k}: {net} must be a /24 (addresses are <prefix>.<ip_index>)")
        for other in sites.values():
            if net.overlaps(other.subnet):
                raise InventoryError(
                    f"{sites_file}: {k}: {net} overlaps lab_sites.{other.name}.subnet {other.subnet}"
                )
        sites[sname] = Site(sname, net, str(sbody.get("description", "")))

    images = Path(images_dir) if images_dir else None
    hosts: dict[str, Host] = {}
    used: dict[tuple[str, int], str] = {}
    lab_group = (top.get("children") or {}).get("lab") or {}
    declared = lab_group.get("hosts") if isinstance(lab_group, dict) else None
    if not declared:
        raise InventoryError(f"{hosts_file}: all.children.lab.hosts: missing (every lab host is declared there)")
    for hname, hbody in declared.items():
        key = f"all.children.lab.hosts.{hname}"
        hbody = hbody or {}
        if not HOSTNAME_RE.match(str(hname)):
            raise InventoryError(f"{hosts_file}: {key}: host name must be lower-case letters, digits and '-'")
        raw = hbody.get("site")
        site_list = raw if isinstance(raw, list) else [raw]
        if raw is None:
            raise InventoryError(f"{hosts_file}: {key}.site: missing (one of {', '.join(sites)})")
        for s in site_list:
            if s not in sites:
                raise InventoryError(f"{hosts_file}: {key}.site: unknown site {s!r} (known: {', '.join(sites)})")
        idx = hbody.get("ip_index")
        if not isinstance(idx, int) or isinstance(idx, bool) or not 2 <= idx <= 254:
            raise InventoryError(f"{hosts_file}: {key}.ip_index: {idx!r} must be a whole number from 2 to 254")
        for s in site_list:
            if (s, idx) in used:
                raise InventoryError(
                    f"{hosts_file}: {key}.ip_index: {idx} on site {s} is already used by {used[(s, idx)]}"
                )
            used[(s, idx)] = hname
        image = hbody.get("image")
        if not isinstance(image, str) or not image:
            raise InventoryError(f"{hosts_file}: {key}.image: missing")
        if images is not None and not (images / image / "Dockerfile").is_file():
            raise InventoryError(f"{hosts_file}: {key}.image: no recipe {images / image / 'Dockerfile'}")
        hosts[hname] = Host(hname, tuple(site_list), idx, image, bool(hbody.get("router", False)), dict(hbody))

    routers = [h for h in hosts.values() if h.router]
    if len(sites) > 1:
        if len(routers) != 1:
            raise InventoryError(
                f"{hosts_file}: all.children.lab.hosts: exactly one host needs 'router: true', found {len(routers)}")
        missing = set(sites) - set(routers[0].sites)
        if missing:
            raise InventoryError(
                f"{hosts_file}: all.children.lab.hosts.{routers[0].name}.site: the router must sit on every site "
                f"(missing {', '.join(sorted(missing))})"
            )

    groups: dict[str, list[str]] = {}
    children: dict[str, set[str]] = {}
    _collect_groups(top, hosts_file, "all", groups, children)
    for gname, members in groups.items():
        for m in members:
            if m not in hosts:
                raise InventoryError(f"{hosts_file}: all.children.{gname}.hosts.{m}: not declared in group lab")
    without = _without(hosts_file, hosts, groups, children)
    for gname, need in REQUIRED_GROUPS.items():
        have = len(groups.get(gname, []))
        if have < need:
            raise InventoryError(
                f"{hosts_file}: all.children.{gname}: needs {need} host(s) for the plan, has {have}"
                + (f" ({WITHOUT_ENV}={','.join(without)} leaves hosts out)" if without else "")
            )
    for k in ("wan_delay_ms",):
        v = gvars.get(k, 0)
        if not isinstance(v, int | float) or v < 0 or v > 2000:
            raise InventoryError(f"{origin.get(k, hosts_file)}: {k}: {v!r} must be a number of ms from 0 to 2000")
    loss = gvars.get("wan_loss", 0.0)
    if not isinstance(loss, int | float) or not 0 <= loss <= 1:
        raise InventoryError(f"{origin.get('wan_loss', hosts_file)}: wan_loss: {loss!r} must be from 0 to 1")
    return Inventory(hosts_file, sites, hosts, groups, gvars, without)
