"""The Docker engine the lab runs on: use a reachable one, else install and start Debian's, else say why not."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
from docker.errors import DockerException

DOCKERD_LOG = Path("/var/log/ccdrill-dockerd.log")


class EngineError(RuntimeError):
    """No Docker engine could be reached or started; the message says what is missing."""


def _ping() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except DockerException:
        return None


def ensure_engine(wait_s: float = 90.0, log=print) -> docker.DockerClient:
    """Return a client for a running engine, starting Debian's dockerd as root when none answers."""
    client = _ping()
    if client:
        return client
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers (DOCKER_HOST or /var/run/docker.sock) and this is not root: "
            "start dockerd, or run as root on Debian/Ubuntu so that ccdrill installs and starts docker.io"
        )
    if not shutil.which("dockerd"):
        if not shutil.which("apt-get"):
            raise EngineError("no Docker engine and no apt-get to install one: install docker.io or Docker Engine")
        log("installing docker.io from Debian's packages")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "docker.io"]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise EngineError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    log(f"starting dockerd (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as out:
        # dockerd outlives this command on purpose: it is the machine's engine, reused by later runs.
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        client = _ping()
        if client:
            return client
        time.sleep(0.5)
    raise EngineError(f"dockerd did not answer within {wait_s:.0f} s; see {DOCKERD_LOG}")
