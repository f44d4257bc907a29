"""A deterministic archive of the stand-ins' source, so that deploying them is one checksum-compared
copy per host (and the same bytes every time for the same code: a second run changes nothing)."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path


def bundle(src: Path, out: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(src.glob("*.py")):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_bytes() != buf.getvalue():
        out.write_bytes(buf.getvalue())
    return out


if __name__ == "__main__":
    print(bundle(Path(sys.argv[1]), Path(sys.argv[2])))
