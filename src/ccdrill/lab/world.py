"""The world: one lab = site networks + host containers, all labelled `ccdrill.lab=<name>`.

Everything the lab creates carries the label, and teardown and the clean-up of a killed run select by it
(never by a name pattern), so two labs on one engine never touch each other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.types import IPAMConfig, IPAMPool

from .images import ensure_images
from .inventory import Inventory

LABEL = "ccdrill.lab"


class LabError(RuntimeError):
    """The lab could not be created as declared; the message says which host or network."""


@dataclass
class HostState:
    name: str
    container: str
    status: str
    addresses: dict[str, str]


class Lab:
    def __init__(self, name: str, inventory: Inventory, client: docker.DockerClient, images_dir: Path):
        if not name or not name.replace("-", "").isalnum():
            raise LabError(f"lab name {name!r}: use letters, digits and '-'")
        self.name = name
        self.inv = inventory
        self.client = client
        self.images_dir = images_dir
        self.labels = {LABEL: name}

    # names -----------------------------------------------------------------------------------------
    def container_name(self, host: str) -> str:
        return f"ccdrill-{self.name}-{host}"

    def network_name(self, site: str) -> str:
        return f"ccdrill-{self.name}-{site}"

    def _filters(self) -> dict:
        return {"label": f"{LABEL}={self.name}"}

    def container(self, host: str):
        return self.client.containers.get(self.container_name(host))

    # lifecycle ---------------------------------------------------------------------------------------
    def down(self) -> dict[str, int]:
        """Remove every container, network and volume of this lab (by label); return the counts."""
        removed = {"containers": 0, "networks": 0, "volumes": 0}
        for c in self.client.containers.list(all=True, filters=self._filters()):
            c.remove(force=True, v=True)
            removed["containers"] += 1
        for n in self.client.networks.list(filters=self._filters()):
            n.remove()
            removed["networks"] += 1
        for v in self.client.volumes.list(filters=self._filters()):
            v.remove(force=True)
            removed["volumes"] += 1
        return removed

    def _check_subnets_free(self) -> None:
        ours = {s.subnet for s in self.inv.sites.values()}
        for net in self.client.networks.list():
            for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                sub = cfg.get("Subnet")
                if not sub or ":" in sub:
                    continue
                import ipaddress

                other = ipaddress.IPv4Network(sub, strict=False)
                clash = [s for s in ours if s.overlaps(other)]
                if clash:
                    owner = (net.attrs.get("Labels") or {}).get(LABEL)
                    who = f"lab {owner!r}" if owner else "another program"
                    raise LabError(
                        f"{self.inv.path}: lab_sites: subnet {clash[0]} overlaps Docker network "
                        f"{net.name} ({other}) of {who}; tear that lab down or change lab_sites"
                    )

    def create(self, log=print) -> float:
        """Create networks and containers (after removing leftovers of a killed run); return seconds taken."""
        t0 = time.monotonic()
        leftovers = self.down()
        if any(leftovers.values()):
            log(f"removed leftovers of an earlier run of lab {self.name!r}: {leftovers}")
        self._check_subnets_free()
        tags = ensure_images(self.client, self.images_dir, {h.image for h in self.inv.hosts.values()}, log)
        for site in self.inv.sites.values():
            self.client.networks.create(
                self.network_name(site.name),
                driver="bridge",
                # Not `internal`: Docker's isolation rules for internal bridges drop bridged frames
                # whose destination is off-subnet, which is every frame sent to the WAN router. No
                # masquerade instead, and lab_network removes the default route on every host, so
                # lab traffic has no way off the lab's own networks.
                options={"com.docker.network.bridge.enable_ip_masquerade": "false"},
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(site.subnet),
                                                       gateway=site.address(1))]),
                labels=self.labels,
            )
        dns_host = self.inv.hosts_of("lab_dns")[0]
        for host in self.inv.hosts.values():
            first = host.sites[0]
            kwargs = {}
            if host.router:
                kwargs.update(devices=["/dev/net/tun:/dev/net/tun:rwm"],
                              sysctls={"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                                       "net.ipv4.conf.default.rp_filter": "0"})
            if host.name != dns_host:
                kwargs["dns"] = [self.inv.address(dns_host, first)]
                kwargs["dns_search"] = [self.inv.vars.get("lab_domain", "lab")]
            net = self.client.api.create_networking_config(
                {self.network_name(first): self.client.api.create_endpoint_config(
                    ipv4_address=self.inv.address(host.name, first))}
            )
            hc = self.client.api.create_host_config(cap_add=["NET_ADMIN"], init=False, **kwargs)
            self.client.api.create_container(
                tags[host.image], name=self.container_name(host.name), hostname=host.name,
                labels={**self.labels, "ccdrill.host": host.name}, host_config=hc, networking_config=net,
                detach=True,
            )
            for other in host.sites[1:]:
                self.client.networks.get(self.network_name(other)).connect(
                    self.container_name(host.name), ipv4_address=self.inv.address(host.name, other))
        for host in self.inv.hosts:
            self.container(host).start()
        self.wait_ready()
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until supervisord (PID 1) answers on every host."""
        pending = set(self.inv.hosts)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for host in sorted(pending):
                c = self.container(host)
                c.reload()
                if c.status != "running":
                    raise LabError(f"host {host}: container {c.name} is {c.status}: {c.logs(tail=20).decode()}")
                rc, _ = c.exec_run(["supervisorctl", "pid"])
                if rc == 0:
                    pending.discard(host)
            if pending:
                time.sleep(0.3)
        if pending:
            raise LabError(f"supervisord did not answer within {timeout:.0f} s on: {', '.join(sorted(pending))}")

    def status(self) -> list[HostState]:
        out = []
        for c in self.client.containers.list(all=True, filters=self._filters()):
            nets = c.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
            out.append(HostState(c.labels.get("ccdrill.host", c.name), c.name, c.status,
                                 {k: v.get("IPAddress", "") for k, v in nets.items()}))
        return sorted(out, key=lambda h: h.name)

    def exec(self, host: str, argv: list[str], timeout: float = 120.0) -> tuple[int, str, str]:
        """Run a command on a lab host, bounded by `timeout` seconds (coreutils timeout inside)."""
        try:
            res = self.container(host).exec_run(["timeout", "-k", "2", str(max(1, int(timeout)))] + argv, demux=True)
        except docker.errors.APIError as exc:  # a paused (hung) or removed host
            raise LabError(f"{host}: {exc.explanation or exc}") from exc
        out, err = res.output if isinstance(res.output, tuple) else (res.output, b"")
        return res.exit_code, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")

    def executor(self, host: str) -> DockerExecutor:
        return DockerExecutor(self, host)

    def ctl(self, host: str, port: int, request: dict | None = None, timeout: float = 30.0) -> dict:
        """Ask a stand-in's control endpoint on a lab host: GET /stats, or POST /ctl with `request`."""
        argv = ["env", "PYTHONPATH=/opt/ccdrill", "python3", "-m", "ccdrill.standins.ctl", str(port)]
        if request is not None:
            argv.append(json.dumps(request))
        # The ctl client prints JSON or exits 1; an exit 0 with no output is the Docker engine losing an
        # exec's output under load (seen in CI). The ctl requests are idempotent: ask again, a few times.
        for _attempt in range(3):
            rc, out, err = self.exec(host, argv, timeout)
            if rc != 0:
                raise LabError(f"{host}:{port} ctl {request or 'stats'}: {(err or out).strip()}")
            try:
                return json.loads(out)
            except json.JSONDecodeError:
                time.sleep(0.2)
        raise LabError(f"{host}:{port} ctl {request or 'stats'}: exit 0 but no JSON answer 3 times: {out[:200]!r}")

    def supervisor(self, host: str, action: str, program: str) -> str:
        """Start/stop/restart a program the way the operators do; returns supervisorctl's answer."""
        rc, out, err = self.exec(host, ["supervisorctl", action, program], 60)
        if rc not in (0, 3):
            raise LabError(f"{host}: supervisorctl {action} {program}: {(out + err).strip()}")
        return out.strip()


class DockerExecutor:
    """The load layer's Executor for a lab host (see ccdrill.load.sipp.Executor)."""

    def __init__(self, lab: Lab, host: str):
        self.lab, self.host = lab, host

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        rc, out, err = self.lab.exec(self.host, argv, timeout)
        if rc == 124:
            raise TimeoutError(f"{self.host}: {' '.join(argv)} did not finish within {timeout:g}s")
        return rc, out, err

    def read(self, path) -> str:
        rc, out, err = self.lab.exec(self.host, ["cat", str(path)], 30)
        if rc != 0:
            raise FileNotFoundError(f"{self.host}:{path}: {err.strip()}")
        return out
