"""ccdrill.standins.common and ctl: config errors, the ctl/stats server, the service runner.

Real sockets on 127.0.0.1 and real processes; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccdrill.standins import common, ctl
from ccdrill.standins.common import (
    ConfigError,
    CtlError,
    Service,
    load_config,
    topic_matches,
    validate_config,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_json(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# --------------------------------------------------------------------------- load_config

REQ = {"name": str, "port": int, "ratio": float, "boards": list, "upstream": (str, type(None))}
GOOD = {"name": "k", "port": 7100, "ratio": 1, "boards": ["b0"], "upstream": None}


def test_load_config_fills_defaults(tmp_path):
    p = write_json(tmp_path / "c.json", GOOD)
    cfg = load_config(str(p), REQ, {"heartbeat_ms": 200, "announcement": None})
    assert cfg["port"] == 7100 and cfg["heartbeat_ms"] == 200 and cfg["announcement"] is None


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ({k: v for k, v in GOOD.items() if k != "port"}, "'port'"),
        ({**GOOD, "port": "7100"}, "'port'"),
        ({**GOOD, "port": True}, "'port'"),  # JSON true is not a port number
        ({**GOOD, "ratio": "x"}, "'ratio'"),
        ({**GOOD, "upstream": 5}, "'upstream'"),
        ({**GOOD, "heartbeat_ms": "fast"}, "'heartbeat_ms'"),  # optional key, wrong type
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_load_config_errors_name_file_and_key(tmp_path, content, key):
    p = write_json(tmp_path / "bad.json", content)
    with pytest.raises(ConfigError) as exc:
        load_config(str(p), REQ, {"heartbeat_ms": 200})
    assert str(p) in str(exc.value)
    assert key in str(exc.value)


def test_load_config_unreadable_names_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="nope.json"):
        load_config(str(missing), REQ)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="bin.json"):
        load_config(str(binary), REQ)


def test_validate_config_on_a_dict():
    with pytest.raises(ConfigError, match="'ctl_port'"):
        validate_config({"name": "x"}, {"name": str, "ctl_port": int})


def test_topic_matches():
    assert topic_matches("cti.control", "cti.control")
    assert not topic_matches("cti.control", "cti.controls")
    assert topic_matches("cti.*", "cti.control") and topic_matches("*", "anything")
    assert not topic_matches("ivr.*", "kcbp.req")


# --------------------------------------------------------------------------- ctl server


class Demo(Service):
    kind = "demo"

    def __init__(self) -> None:
        super().__init__("demo1")
        self.count = 0

    def stats(self) -> dict:
        s = super().stats()
        s["count"] = self.count
        return s

    async def handle_ctl(self, req: dict) -> dict:
        if req.get("op") == "inc":
            self.count += int(req.get("by", 1))
            return {"count": self.count}
        if req.get("op") == "boom":
            raise RuntimeError("bug in op")
        if req.get("op") == "slow":
            await asyncio.sleep(float(req["s"]))
            return {"slept": req["s"]}
        return await super().handle_ctl(req)


async def _raw(port: int, data: bytes, half_close: bool = True) -> tuple[int, dict | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return 0, None  # the server closed on unread garbage: a reset, not a crash
    finally:
        writer.close()
    if not raw:
        return 0, None
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)


def _post(body: bytes) -> bytes:
    return b"POST /ctl HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_ctl_server_answers_and_survives_garbage():
    async def scenario():
        svc = Demo()
        port = await svc.start_ctl(0)
        try:
            status, stats = await _raw(port, b"GET /stats HTTP/1.0\r\n\r\n")
            assert status == 200
            assert {"name", "kind", "pid", "started", "ts", "count"} <= stats.keys()
            assert stats["kind"] == "demo" and stats["pid"] == os.getpid()
            assert isinstance(stats["ts"], float) and stats["ts"] >= stats["started"]

            assert await _raw(port, _post(b'{"op":"inc","by":2}')) == (200, {"count": 2})
            status, ans = await _raw(port, _post(b'{"op":"nope"}'))
            assert status == 400 and "nope" in ans["error"]
            status, ans = await _raw(port, _post(b"{bad json"))
            assert status == 400 and "error" in ans
            status, ans = await _raw(port, _post(b"[1,2]"))
            assert status == 400 and "object" in ans["error"]
            status, ans = await _raw(port, _post(b'{"op":"boom"}'))
            assert status == 500 and "bug in op" in ans["error"]
            assert (await _raw(port, b"GET /nowhere HTTP/1.0\r\n\r\n"))[0] == 404
            assert (await _raw(port, b"GET /ctl HTTP/1.0\r\n\r\n"))[0] == 405

            garbage = [
                b"\x00\xff\xfe garbage\r\n\r\n",
                b"\r\n\r\n",
                b"POST /ctl HTTP/1.0\r\nContent-Length: abc\r\n\r\n",
                b"POST /ctl HTTP/1.0\r\nContent-Length: 99999999999\r\n\r\n",
                b"POST /ctl HTTP/1.0\r\nContent-Length: 50\r\n\r\n{\"op\"",  # truncated body
                _post(b'{"op":"inc","by":"\xff"}'),
                b"X" * 200_000 + b"\r\n\r\n",  # overlong request line
                b"",  # connect and close at once
            ]
            for g in garbage:
                status, _ = await _raw(port, g)
                assert status in (0, 400, 408, 413)
            # a client that connects and says nothing must not block others
            idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
            status, stats = await _raw(port, b"GET /stats HTTP/1.0\r\n\r\n")
            assert status == 200 and stats["count"] == 2
            idle_w.close()
        finally:
            await svc.close()

    asyncio.run(scenario())


def test_ctl_read_timeout_cuts_idle_clients_not_slow_ops(monkeypatch):
    monkeypatch.setattr(common, "HTTP_READ_TIMEOUT", 0.3)

    async def scenario():
        svc = Demo()
        port = await svc.start_ctl(0)
        try:
            # a client that sends half a request and stalls gets 408 instead of holding a slot
            assert (await _raw(port, b"POST /ctl HTTP/1.0\r\n", half_close=False))[0] == 408
            # an op that takes longer than the read timeout still completes
            assert await _raw(port, _post(b'{"op":"slow","s":0.6}')) == (200, {"slept": 0.6})
        finally:
            await svc.close()

    asyncio.run(scenario())


def test_ctl_client_cli():
    async def scenario():
        svc = Demo()
        port = await svc.start_ctl(0)

        async def cli(*args: str) -> subprocess.CompletedProcess:
            return await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "ccdrill.standins.ctl", *args],
                capture_output=True, text=True, env=_env(), timeout=20)

        try:
            r = await cli(str(port))
            assert r.returncode == 0 and json.loads(r.stdout)["name"] == "demo1"
            r = await cli(str(port), '{"op":"inc"}')
            assert r.returncode == 0 and json.loads(r.stdout) == {"count": 1}
            r = await cli(str(port), '{"op":"nope"}')
            assert r.returncode == 1 and "400" in r.stderr and "nope" in r.stderr
            r = await cli(str(port), "not json")
            assert r.returncode == 1 and "invalid JSON" in r.stderr
            r = await cli("notaport")
            assert r.returncode == 1 and "usage" in r.stderr
        finally:
            await svc.close()
        r = await cli(str(port))  # nobody listening any more
        assert r.returncode == 1 and r.stderr

    asyncio.run(scenario())


def test_ctl_request_function_raises_readable_error():
    with pytest.raises(RuntimeError, match=r"ctl 127\.0\.0\.1:\d+"):
        ctl.request(free_port())


# --------------------------------------------------------------------------- run_service (real processes)


def _start(module: str, cfg_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"ccdrill.standins.{module}", "--config", str(cfg_path)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"name": "k1", "ctl_port": 1}, "'port'"),
        ({"name": "k1", "port": "x", "ctl_port": 1}, "'port'"),
        ({"name": "k1", "port": 1, "ctl_port": 1, "upstream": "nocolon"}, "'upstream'"),
        ("{oops", "invalid JSON"),
    ],
)
def test_service_config_error_exits_2_naming_file_and_key(tmp_path, cfg, needle):
    p = write_json(tmp_path / "kcxp.json", cfg)
    proc = _start("kcxp", p)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert str(p) in err and needle in err
    assert "<config>" not in err


def test_service_missing_config_file_exits_2(tmp_path):
    proc = _start("cti", tmp_path / "absent.json")
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "absent.json" in err


def test_service_runs_until_sigterm_and_exits_0(tmp_path):
    ctl_port = free_port()
    p = write_json(tmp_path / "kcxp.json",
                   {"name": "k1", "listen": "127.0.0.1", "port": free_port(), "ctl_port": ctl_port})
    proc = _start("kcxp", p)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                stats = ctl.request(ctl_port, timeout=1)
                break
            except RuntimeError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert stats["pid"] == proc.pid and stats["kind"] == "kcxp"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped" in err  # one log line per event on stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctl_error_is_an_exception():
    assert issubclass(CtlError, Exception) and issubclass(ConfigError, Exception)
