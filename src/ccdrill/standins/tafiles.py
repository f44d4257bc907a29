"""The fund registrar's (TA) daily confirmation files: their format, a deterministic generator, a
validator, and the file service on ta-files from which the TA import job reads them (plan 2.2.2:
"it reads many remote files").

Stdlib only: deployed into the lab with the other stand-ins.

File format (ASCII, one record per line, ``|``-delimited), one batch = the files of one day::

    H|TACONFIRM|<ta code>|<batch>|<seq 001..>|<files in the batch>
    D|<confirm no>|<account>|<fund>|<business>|<trade date>|<amount>|<shares>|<nav>|<fee>|<status>|<memo>
    ...
    T|<detail record count, 10 digits>|<sha256 hex of the detail lines, newlines included>

Line 1 is the header, details start at line 2. A detail record's fields: confirmation number
(20 digits), fund account (``A`` + 6 digits, as in ``fund_account``), fund code (6 digits),
business code (120 subscription order, 122 purchase, 124 redemption, 142 forced redemption,
143 dividend), trade date (YYYYMMDD, a real date), amount and shares (decimal(16,2), no leading
zero), NAV (decimal(8,4)), fee (decimal(12,2)), status (one digit), memo (up to 120 of
``A-Z a-z 0-9 space , . -``).

A batch is ready when its folder ``<root>/<batch>/`` exists: the generator writes into a hidden
folder and renames it into place, so the service never lists half a batch.

Row checksum (what the import job and the checks compare with the database): for each detail
record the canonical text ``batch|file|line|confirm|account|fund|business|YYYY-MM-DD|amount|
shares|nav|fee|status|memo``; its MD5's first 15 hex digits as an integer; the batch checksum is
the sum over the rows (order-free, so the database computes the same with ``sum(...)``).

Commands::

    python3 -m ccdrill.standins.tafiles generate --root DIR --batch B --files N --bytes M
        [--seed S] [--corrupt SEQ:LINE:KIND] [--replace]      # prints the expectation (JSON)
    python3 -m ccdrill.standins.tafiles --config FILE         # the file service (supervisord)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time

from .common import Service, run_service, validate_config

KIND = "TACONFIRM"
TA_CODE = "F1"
BATCH_RE = re.compile(r"\d{8}(?:-[A-Za-z0-9]{1,16})?")
FILE_RE = re.compile(r"TACONF_(\d{8}(?:-[A-Za-z0-9]{1,16})?)_(\d{3})\.txt")
BUSINESS = ("120", "122", "124", "142", "143")
MEMO_WORDS = ("subscription", "purchase", "redemption", "dividend", "reinvest", "branch", "online", "counter",
              "Shanghai", "Shenzhen", "fund", "account", "confirmed", "order", "agent", "channel", "retail",
              "institution", "cash", "bonus", "transfer", "switch", "plan", "monthly", "ref")
# One regex for a whole detail line (the fast path); FIELDS name the groups for error messages.
FIELDS = ("confirm_no", "account", "fund_code", "business", "trade_date", "amount", "shares", "nav", "fee",
          "status", "memo")
FIELD_RES = {
    "confirm_no": r"\d{20}", "account": r"A\d{6}", "fund_code": r"\d{6}", "business": "|".join(BUSINESS),
    "trade_date": r"\d{8}", "amount": r"(?:0|[1-9]\d{0,13})\.\d{2}", "shares": r"(?:0|[1-9]\d{0,13})\.\d{2}",
    "nav": r"(?:0|[1-9]\d{0,3})\.\d{4}", "fee": r"(?:0|[1-9]\d{0,9})\.\d{2}", "status": r"\d",
    "memo": r"[A-Za-z0-9 ,.-]{0,120}",
}
FIELD_FORMATS = {
    "confirm_no": "20 digits", "account": "A + 6 digits", "fund_code": "6 digits",
    "business": "one of " + "/".join(BUSINESS), "trade_date": "a date YYYYMMDD", "amount": "decimal(16,2)",
    "shares": "decimal(16,2)", "nav": "decimal(8,4)", "fee": "decimal(12,2)", "status": "one digit",
    "memo": "up to 120 of A-Z a-z 0-9 space , . -",
}
DETAIL_RE = re.compile("D\\|" + "\\|".join(f"({FIELD_RES[f]})" for f in FIELDS))
FIELD_FULL = {f: re.compile(FIELD_RES[f]) for f in FIELDS}
HEADER_RE = re.compile(rf"H\|{KIND}\|([A-Z0-9]{{2,8}})\|([^|]+)\|(\d{{3}})\|(\d{{3}})")
TRAILER_RE = re.compile(r"T\|(\d{10})\|([0-9a-f]{64})")
MAX_LINE = 1024


class TaFileError(ValueError):
    """A TA file that must not be imported; names the file and the line."""

    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file} line {line}: {message}")
        self.file, self.line, self.message = file, line, message


def file_name(batch: str, seq: int) -> str:
    return f"TACONF_{batch}_{seq:03d}.txt"


def row_hash(canonical: str) -> int:
    return int(hashlib.md5(canonical.encode(), usedforsecurity=False).hexdigest()[:15], 16)


def canonical(batch: str, file: str, line: int, f: tuple[str, ...] | list[str]) -> str:
    d = f[4]
    return "|".join((batch, file, str(line), f[0], f[1], f[2], f[3], f"{d[:4]}-{d[4:6]}-{d[6:]}", *f[5:]))


# --------------------------------------------------------------------------- generator


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _detail(rng: random.Random, batch: str, seq: int, row: int, day: str) -> tuple[str, ...]:
    nav = rng.randrange(5000, 40000)  # 0.5000 .. 3.9999
    amount = rng.randrange(100_00, 5_000_000_00)
    shares = amount * 10000 // nav
    memo = " ".join(rng.choices(MEMO_WORDS, k=rng.randrange(8, 14)))[:120]
    return (f"{batch[:8]}{seq:03d}{row:09d}", f"A{rng.randrange(1, 1000000):06d}", f"{rng.randrange(1, 999999):06d}",
            rng.choice(BUSINESS), day, _money(amount), _money(shares), f"{nav // 10000}.{nav % 10000:04d}",
            _money(amount // 200), str(rng.randrange(0, 3)), memo)


def generate(root: str, batch: str, files: int, total_bytes: int, seed: str = "ccdrill",
             corrupt: tuple[int, int, str] | None = None, replace: bool = False) -> dict:
    """Write one batch of `files` files holding at least `total_bytes` bytes under root/batch (atomically);
    return the expectation: per file name/rows/bytes/sha256, the batch's rows, bytes and row checksum.

    `corrupt` = (file seq, line, kind) spoils one record after the fact: kind `field` (an amount that is
    not a number), `checksum` (a memo changed: every field valid, the trailer's checksum wrong) or `count`
    (the trailer's record count off by one; line is ignored)."""
    if not BATCH_RE.fullmatch(batch):
        raise ValueError(f"batch {batch!r}: want YYYYMMDD or YYYYMMDD-tag")
    day = batch[:8]
    datetime.date(int(day[:4]), int(day[4:6]), int(day[6:]))  # a real date, else ValueError
    if files < 1 or files > 999 or total_bytes < 1:
        raise ValueError("files must be 1..999 and bytes > 0")
    final = os.path.join(root, batch)
    if os.path.exists(final) and not replace:
        raise FileExistsError(f"batch {batch} already published in {final}")
    tmp = os.path.join(root, f".{batch}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    per_file = -(-total_bytes // files)
    out = {"batch": batch, "files": [], "rows": 0, "bytes": 0, "checksum": 0, "corrupt": None}
    for seq in range(1, files + 1):
        name = file_name(batch, seq)
        rng = random.Random(f"{seed}:{batch}:{seq}")
        header = f"H|{KIND}|{TA_CODE}|{batch}|{seq:03d}|{files:03d}\n"
        lines, size, checksum, row = [], len(header), 0, 0
        while size < per_file:
            row += 1
            f = _detail(rng, batch, seq, row, day)
            lines.append("D|" + "|".join(f) + "\n")
            size += len(lines[-1])
            checksum += row_hash(canonical(batch, name, row + 1, f))
        count = len(lines)
        # The registrar's trailer covers the records as sent; a corruption happens after (in transit).
        digest = hashlib.sha256("".join(lines).encode()).hexdigest()
        trailer_count = count
        if corrupt and corrupt[0] == seq:
            if corrupt[2] == "count":
                trailer_count = count + 1
                out["corrupt"] = {"file": name, "line": count + 2, "kind": "count"}
            else:
                idx = corrupt[1] - 2
                if not 0 <= idx < count:
                    raise ValueError(f"corrupt: {name} has detail lines 2..{count + 1}, not {corrupt[1]}")
                parts = lines[idx].rstrip("\n").split("|")
                if corrupt[2] == "field":
                    parts[6] = parts[6][:-4] + "x" + parts[6][-3:]  # the amount: 12x.50
                else:
                    parts[11] = parts[11][:-1] + ("A" if parts[11][-1:] != "A" else "B")
                lines[idx] = "|".join(parts) + "\n"
                # A valid-looking record with the wrong content is only caught by the trailer's checksum.
                out["corrupt"] = {"file": name, "line": corrupt[1] if corrupt[2] == "field" else count + 2,
                                  "record": corrupt[1], "kind": corrupt[2]}
        body = "".join(lines).encode()
        data = header.encode() + body + f"T|{trailer_count:010d}|{digest}\n".encode()
        with open(os.path.join(tmp, name), "wb") as fh:
            fh.write(data)
        out["files"].append({"name": name, "rows": count, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()})
        out["rows"] += count
        out["bytes"] += len(data)
        out["checksum"] += checksum
    out["checksum"] = str(out["checksum"])
    if os.path.exists(final):  # replace: the registrar re-sends the batch; swap it in at once
        old = os.path.join(root, f".{batch}.old.{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    return out


# --------------------------------------------------------------------------- validator


_DATES: dict[str, bool] = {}


def _valid_date(d: str) -> bool:
    ok = _DATES.get(d)
    if ok is None:
        try:
            datetime.date(int(d[:4]), int(d[4:6]), int(d[6:]))
            ok = True
        except ValueError:
            ok = False
        if len(_DATES) < 10000:
            _DATES[d] = ok
    return ok


def _explain(file: str, lineno: int, text: str) -> TaFileError:
    """Why a detail line failed the fast regex: the first field that is wrong."""
    if not text.startswith("D|"):
        return TaFileError(file, lineno, f"record type {text[:1]!r}: want D (detail) or T (trailer)")
    parts = text[2:].split("|")
    if len(parts) != len(FIELDS):
        return TaFileError(file, lineno, f"{len(parts)} fields, a detail record has {len(FIELDS)}")
    for name, value in zip(FIELDS, parts, strict=True):
        if not FIELD_FULL[name].fullmatch(value):
            return TaFileError(file, lineno, f"field {name} {value[:40]!r} is not {FIELD_FORMATS[name]}")
    return TaFileError(file, lineno, "malformed detail record")


def read_file(path: str, name: str, batch: str, seq: int, files: int, emit=None) -> dict:
    """Validate one TA file; call emit(line_no, fields) for each detail record. Returns rows, bytes,
    checksum. Raises TaFileError naming the file and the line at the first problem."""
    rows, checksum, size = 0, 0, 0
    sha = hashlib.sha256()
    trailer = None
    with open(path, "rb") as fh:
        first = fh.readline(MAX_LINE + 1)
        size += len(first)
        m = HEADER_RE.fullmatch(first.decode("ascii", "replace").rstrip("\n"))
        if not m:
            raise TaFileError(name, 1, f"header {first[:60]!r} is not H|{KIND}|<ta>|<batch>|<seq>|<files>")
        if m.group(2) != batch or int(m.group(3)) != seq or int(m.group(4)) != files:
            raise TaFileError(name, 1, f"header says batch {m.group(2)} file {m.group(3)} of {m.group(4)}; "
                                       f"the source lists it as batch {batch} file {seq:03d} of {files:03d}")
        lineno = 1
        for raw in fh:
            lineno += 1
            size += len(raw)
            if trailer is not None:
                raise TaFileError(name, lineno, "data after the trailer")
            if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
                raise TaFileError(name, lineno, "line too long or not terminated by a newline")
            try:
                text = raw[:-1].decode("ascii")
            except UnicodeDecodeError:
                raise TaFileError(name, lineno, "non-ASCII bytes") from None
            if text.startswith("T|"):
                trailer = (lineno, text)
                continue
            dm = DETAIL_RE.fullmatch(text)
            if dm is None:
                raise _explain(name, lineno, text)
            f = dm.groups()
            if not _valid_date(f[4]):
                raise TaFileError(name, lineno, f"field trade_date {f[4]!r} is not a date YYYYMMDD")
            sha.update(raw)
            rows += 1
            checksum += row_hash(canonical(batch, name, lineno, f))
            if emit is not None:
                emit(lineno, f)
    if trailer is None:
        raise TaFileError(name, lineno + 1, "no trailer (file truncated?)")
    tm = TRAILER_RE.fullmatch(trailer[1])
    if not tm:
        raise TaFileError(name, trailer[0], "trailer is not T|<10-digit count>|<sha256>")
    if int(tm.group(1)) != rows:
        raise TaFileError(name, trailer[0], f"trailer counts {int(tm.group(1))} records, the file holds {rows}")
    if tm.group(2) != sha.hexdigest():
        raise TaFileError(name, trailer[0], "trailer checksum does not match the detail records")
    return {"rows": rows, "bytes": size, "checksum": checksum}


# --------------------------------------------------------------------------- the file service


def list_batches(root: str) -> list[dict]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for b in sorted(os.listdir(root)):
            if BATCH_RE.fullmatch(b) and os.path.isdir(os.path.join(root, b)):
                out.append({"batch": b, **_batch_files(root, b)})
    return out


def _batch_files(root: str, batch: str) -> dict:
    files = []
    for n in sorted(os.listdir(os.path.join(root, batch))):
        m = FILE_RE.fullmatch(n)
        if m and m.group(1) == batch:
            files.append({"name": n, "size": os.path.getsize(os.path.join(root, batch, n))})
    return {"files": files, "bytes": sum(f["size"] for f in files)}


class TaFiles(Service):
    kind = "ta_files"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "root": str, "port": int, "ctl_port": int}, {"listen": "0.0.0.0"})
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.root, self.listen, self.port = cfg["root"], cfg["listen"], cfg["port"]
        self.counts = {"requests": 0, "listings": 0, "files_served": 0, "bytes_served": 0, "not_found": 0,
                       "bad_requests": 0, "errors": 0}
        self.clients: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None

    def stats(self) -> dict:
        s = super().stats()
        s.update({"root": self.root, "port": self.port, **self.counts, "clients": dict(self.clients),
                  "batches": [b["batch"] for b in list_batches(self.root)]})
        return s

    async def run(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        await self.start_ctl(self.ctl_port)
        self._server = await asyncio.start_server(self._serve, self.listen, self.port)
        self.log("listening", port=self.port, root=self.root)
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await super().close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            for _ in range(100):
                h = await asyncio.wait_for(reader.readline(), 10)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            self.counts["requests"] += 1
            self.clients[peer] = self.clients.get(peer, 0) + 1
            if len(parts) != 3 or parts[0] != "GET":
                self.counts["bad_requests"] += 1
                await self._json(writer, 400, {"error": "only GET /batches[/<batch>/[<file>]]"})
                return
            await self._route(writer, parts[1].split("?", 1)[0])
        except Exception as e:  # a broken client never takes the service down
            self.counts["errors"] += 1
            self.log("connection_error", peer=peer, error=repr(e))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, writer: asyncio.StreamWriter, path: str) -> None:
        seg = [s for s in path.split("/") if s]
        if seg == ["batches"]:
            self.counts["listings"] += 1
            await self._json(writer, 200, {"batches": list_batches(self.root)})
            return
        if len(seg) >= 2 and seg[0] == "batches" and BATCH_RE.fullmatch(seg[1]) \
                and os.path.isdir(os.path.join(self.root, seg[1])):
            if len(seg) == 2:
                self.counts["listings"] += 1
                await self._json(writer, 200, {"batch": seg[1], **_batch_files(self.root, seg[1])})
                return
            if len(seg) == 3 and FILE_RE.fullmatch(seg[2]):
                p = os.path.join(self.root, seg[1], seg[2])
                if os.path.isfile(p):
                    with open(p, "rb") as fh:
                        size = os.fstat(fh.fileno()).st_size
                        writer.write(f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n"
                                     "Connection: close\r\n\r\n".encode())
                        await writer.drain()
                        sent = await asyncio.get_running_loop().sendfile(writer.transport, fh)
                    self.counts["files_served"] += 1
                    self.counts["bytes_served"] += sent
                    return
        self.counts["not_found"] += 1
        await self._json(writer, 404, {"error": f"no such batch or file: {path}"})

    async def _json(self, writer: asyncio.StreamWriter, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()


def _generate_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="tafiles generate", description="publish one batch of TA files")
    p.add_argument("--root", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--files", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--seed", default="ccdrill")
    p.add_argument("--corrupt", help="SEQ:LINE:KIND (KIND field|checksum|count)")
    p.add_argument("--replace", action="store_true", help="re-send a batch already published")
    a = p.parse_args(argv)
    corrupt = None
    if a.corrupt:
        seq, line, kind = a.corrupt.split(":")
        if kind not in ("field", "checksum", "count"):
            p.error(f"--corrupt kind {kind!r}: want field, checksum or count")
        corrupt = (int(seq), int(line), kind)
    t0 = time.monotonic()
    try:
        out = generate(a.root, a.batch, a.files, a.bytes, a.seed, corrupt, a.replace)
    except (ValueError, OSError) as e:
        print(f"tafiles generate: {e}", file=sys.stderr)
        return 2
    out["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        sys.exit(_generate_cli(argv[1:]))
    run_service(TaFiles, argv)


if __name__ == "__main__":
    main()
