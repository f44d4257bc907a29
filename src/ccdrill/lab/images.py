"""Lab images, built locally and cached by the hash of their recipe.

`ccdrill/base:<hash>` comes from debootstrap (Debian's packages) through `docker import`; every other
kind is a local Dockerfile under images/<kind>/ built FROM its parent. Nothing is pulled from a registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker

# Parent of each image kind; `base` is the debootstrap root.
PARENTS = {"host": "base", "pbx": "host", "carrier": "host", "db": "host", "web": "host", "mail": "host"}
RECIPE_LABEL = "ccdrill.recipe"


class ImageError(RuntimeError):
    """An image recipe could not be built; the message names the recipe."""


def _digest(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def read_recipe(path: Path) -> dict[str, str | list[str]]:
    recipe: dict[str, str | list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key not in ("suite", "mirror", "variant", "packages") or not value.strip():
            raise ImageError(f"{path}:{n}: expected 'suite|mirror|variant|packages <value>', got {line!r}")
        recipe[key] = value.split() if key == "packages" else value.strip()
    for key in ("suite", "mirror"):
        if key not in recipe:
            raise ImageError(f"{path}: '{key}' missing")
    return recipe


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_base(client: docker.DockerClient, images_dir: Path, log=print) -> str:
    recipe_file = images_dir / "base" / "recipe.txt"
    tag = f"ccdrill/base:{_digest([recipe_file])}"
    if _exists(client, tag):
        return tag
    recipe = read_recipe(recipe_file)
    if not shutil.which("debootstrap"):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, capture_output=True)
        else:
            raise ImageError("debootstrap is missing: apt-get install debootstrap (as root)")
    log(f"building {tag} with debootstrap ({recipe['suite']}, first build takes a few minutes)")
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ccdrill-rootfs-", dir="/var/tmp"))
    try:
        cmd = ["debootstrap", f"--variant={recipe.get('variant', 'minbase')}"]
        if recipe.get("packages"):
            cmd.append("--include=" + ",".join(recipe["packages"]))
        cmd += [recipe["suite"], str(root), recipe["mirror"]]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageError(f"{recipe_file}: debootstrap failed: {(r.stdout + r.stderr)[-800:]}")
        # Slim the root: package caches and lists are rebuilt by `apt-get update` in child images.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / sub).glob("*"):
                if f.is_file():
                    f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import", "--change", f"LABEL {RECIPE_LABEL}=base", "--change", 'CMD ["/bin/bash"]', "-", tag],
            stdin=tar.stdout, capture_output=True, text=True,
        )
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"docker import of {tag} failed: {imp.stderr.strip()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    log(f"built {tag} in {time.monotonic() - t0:.0f} s")
    return tag


def build_kind(client: docker.DockerClient, images_dir: Path, kind: str, parent_tag: str, log=print) -> str:
    folder = images_dir / kind
    if not (folder / "Dockerfile").is_file():
        raise ImageError(f"no recipe {folder / 'Dockerfile'}")
    files = [p for p in folder.rglob("*") if p.is_file()]
    tag = f"ccdrill/{kind}:{_digest(files, parent_tag)}"
    if _exists(client, tag):
        return tag
    log(f"building {tag}")
    t0 = time.monotonic()
    arg = "BASE" if PARENTS[kind] == "base" else PARENTS[kind].upper()
    try:
        client.images.build(
            path=str(folder), tag=tag, buildargs={arg: parent_tag}, pull=False, rm=True, forcerm=True,
            labels={RECIPE_LABEL: kind},
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(x.get("stream", x.get("error", ""))) for x in list(exc.build_log)[-15:])
        raise ImageError(f"{folder / 'Dockerfile'}: build failed: {exc.msg}\n{tail}") from exc
    log(f"built {tag} in {time.monotonic() - t0:.0f} s")
    return tag


def ensure_images(client: docker.DockerClient, images_dir: Path, kinds: set[str], log=print) -> dict[str, str]:
    """Return {kind: tag} for the kinds asked and their parents, building only what changed."""
    tags = {"base": build_base(client, images_dir, log)}

    def need(kind: str) -> str:
        if kind not in tags:
            if kind not in PARENTS:
                raise ImageError(f"unknown image kind {kind!r} (known: {', '.join(PARENTS)})")
            tags[kind] = build_kind(client, images_dir, kind, need(PARENTS[kind]), log)
        return tags[kind]

    for k in sorted(kinds):
        need(k)
    return tags
