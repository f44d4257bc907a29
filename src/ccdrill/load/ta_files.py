"""The fund registrar's side of the TA import: publish a batch of deterministic TA text files on the file
server (ta-files) with one command inside the lab, and know what the import must then hold.

The files are written on ta-files by the generator of ``ccdrill.standins.tafiles`` (deployed there with
the stand-ins), so more than 100 MB never crosses the control connection; what comes back is the
generator's expectation: per file its rows, bytes and sha256, and for the batch its row count and row
checksum (the sum the database must reproduce, see ``ccdrill.checks.ta``). ``expectation()`` computes
the same locally for a batch small enough, from the same deterministic generator.
"""

from __future__ import annotations

import datetime
import json
import shlex
import tempfile

from ..lab.world import Lab, LabError
from ..standins import tafiles

ROOT = "/var/lib/ta-files"  # the file service's folder on ta-files (ta_files_root in the inventory)
PYTHON = ["env", "PYTHONPATH=/opt/ccdrill", "python3", "-m", "ccdrill.standins.tafiles"]


def batch_name(tag: str, day: datetime.date | None = None) -> str:
    """A batch of the next business night: YYYYMMDD-<tag> (the tag keeps scenarios' batches apart)."""
    day = day or datetime.date.today() + datetime.timedelta(days=1)
    name = f"{day:%Y%m%d}-{tag}"
    if not tafiles.BATCH_RE.fullmatch(name):
        raise ValueError(f"batch tag {tag!r}: 1-16 letters or digits")
    return name


def publish_batch(lab: Lab, host: str, batch: str, files: int, total_bytes: int,
                  corrupt: tuple[int, int, str] | None = None, replace: bool = False, root: str = ROOT,
                  timeout: float = 300) -> dict:
    """Generate the batch on `host` (the registrar's file server) and return the generator's expectation."""
    argv = [*PYTHON, "generate", "--root", root, "--batch", batch, "--files", str(files),
            "--bytes", str(total_bytes)]
    if corrupt:
        argv += ["--corrupt", ":".join(str(x) for x in corrupt)]
    if replace:
        argv.append("--replace")
    rc, out, err = lab.exec(host, argv, timeout)
    if rc != 0:
        raise LabError(f"{host}: publishing TA batch {batch} failed ({' '.join(map(shlex.quote, argv[3:]))}): "
                       f"{(err or out).strip()[-500:]}")
    return json.loads(out)


def withdraw_batch(lab: Lab, host: str, batch: str, root: str = ROOT) -> None:
    """Remove a test batch from the file server (so no later run imports it again)."""
    if not tafiles.BATCH_RE.fullmatch(batch):
        raise ValueError(f"not a batch name: {batch!r}")
    rc, _out, err = lab.exec(host, ["rm", "-rf", "--", f"{root}/{batch}"], 60)
    if rc != 0:
        raise LabError(f"{host}: removing batch {batch}: {err.strip()}")


def expectation(batch: str, files: int, total_bytes: int, seed: str = "ccdrill") -> dict:
    """The generator's expectation computed here (writes the files to a temporary folder, then drops them)."""
    with tempfile.TemporaryDirectory(prefix="ccdrill-ta-") as tmp:
        return tafiles.generate(tmp, batch, files, total_bytes, seed)
