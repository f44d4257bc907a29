"""SMS gateway stand-in (the carrier's SMS service the senders use, plan 2.2.5, 3.4).

``POST /sms`` on the lab network with ``{"id", "to", "text"}`` accepts one SMS and counts it by the
address of the host that sent it (a sender in Shanghai or in Shenzhen); the same id sent again is
answered but counted as a duplicate, not as a second SMS. Control port (127.0.0.1): ``GET /stats``
(received, per sender address, duplicates, rejected) and ``{"op": "lookup", "ids": [...]}`` (the
sender address of each id, or null). Stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict

from .common import CtlError, Service, _HttpError, parse_hostport, run_service, validate_config

ID_RE = re.compile(r"[A-Za-z0-9._-]{1,80}")
PHONE_RE = re.compile(r"\+?[0-9]{5,20}")
MAX_TEXT = 1000
READ_TIMEOUT = 5.0


def check_sms(msg: object) -> dict:
    """The fields of one SMS, or ValueError naming the bad one."""
    if not isinstance(msg, dict):
        raise ValueError("body must be a JSON object")
    if not isinstance(msg.get("id"), str) or not ID_RE.fullmatch(msg["id"]):
        raise ValueError("'id' must be 1-80 letters, digits, '.', '_' or '-'")
    if not isinstance(msg.get("to"), str) or not PHONE_RE.fullmatch(msg["to"]):
        raise ValueError("'to' must be a phone number (5-20 digits, optional +)")
    text = msg.get("text")
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
        raise ValueError(f"'text' must be 1-{MAX_TEXT} characters")
    return {"id": msg["id"], "to": msg["to"], "text": text}


async def serve_json(service: Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path_ok: str,
                     accept) -> None:
    """One HTTP/1.0 request on a public port: ``POST path_ok`` with a JSON body -> ``accept(body, peer)``.

    ValueError from ``accept`` -> 400 with its message; anything malformed -> 4xx; counted in
    ``service.rejected``. Never raises: a broken client must never take the service down."""
    peer = (writer.get_extra_info("peername") or ("?",))[0]
    try:
        try:
            method, path, raw = await asyncio.wait_for(service._read_request(reader), READ_TIMEOUT)
            if path != path_ok:
                raise _HttpError(404, f"no such path {path!r}: POST {path_ok}")
            if method != "POST":
                raise _HttpError(405, f"POST {path_ok}")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _HttpError(400, f"invalid JSON: {e}") from None
            try:
                status, answer = 200, accept(body, peer)
            except ValueError as e:
                raise _HttpError(400, str(e)) from None
        except _HttpError as e:
            service.rejected += 1
            status, answer = e.status, {"error": e.message}
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            service.rejected += 1
            status, answer = 400, {"error": "malformed request"}
        data = json.dumps(answer).encode()
        writer.write(f"HTTP/1.0 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
    except Exception as e:  # noqa: BLE001
        service.log("api_connection_error", peer=peer, error=repr(e))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class SmsGateway(Service):
    kind = "smsgw"

    def __init__(self, cfg: dict) -> None:
        cfg = validate_config(cfg, {"name": str, "listen": str, "ctl_port": int}, {"keep_ids": 20000})
        super().__init__(cfg["name"], ctl_port=cfg["ctl_port"])
        self.listen = parse_hostport(cfg["listen"], "listen")
        self.keep_ids = max(1, int(cfg["keep_ids"]))
        self.received = 0
        self.duplicates = 0
        self.rejected = 0
        self.by_sender: dict[str, int] = {}
        self.ids: OrderedDict[str, str] = OrderedDict()
        self.last: dict | None = None
        self._server: asyncio.base_events.Server | None = None

    def accept(self, msg: object, sender: str) -> dict:
        sms = check_sms(msg)
        if sms["id"] in self.ids:
            self.duplicates += 1
            return {"accepted": sms["id"], "duplicate": True}
        self.received += 1
        self.by_sender[sender] = self.by_sender.get(sender, 0) + 1
        self.ids[sms["id"]] = sender
        while len(self.ids) > self.keep_ids:
            self.ids.popitem(last=False)
        self.last = {**sms, "sender": sender}
        return {"accepted": sms["id"], "duplicate": False}

    def stats(self) -> dict:
        s = super().stats()
        s.update({"listen": f"{self.listen[0]}:{self.listen[1]}", "received": self.received,
                  "by_sender": dict(self.by_sender), "duplicates": self.duplicates, "rejected": self.rejected,
                  "last": self.last})
        return s

    async def handle_ctl(self, req: dict) -> dict:
        if req.get("op") == "lookup":
            ids = req.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 10000:
                raise CtlError("lookup: 'ids' must be a list of at most 10000 strings")
            return {"senders": {i: self.ids.get(i) for i in ids}}
        return await super().handle_ctl(req)

    async def _serve_api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_json(self, reader, writer, "/sms", self.accept)

    async def run(self) -> None:
        await self.start_ctl(self.ctl_port)
        self._server = await asyncio.start_server(self._serve_api, *self.listen)
        self.log("listening", address=f"{self.listen[0]}:{self.listen[1]}")
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await super().close()


def main(argv: list[str] | None = None) -> None:
    run_service(SmsGateway, argv)


if __name__ == "__main__":
    main()
