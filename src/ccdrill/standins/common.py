"""Common surface of every stand-in (docs/telephony.md, "Common surface of every stand-in").

Stdlib only: this module is copied into Debian lab hosts that have nothing but python3.

- ``load_config`` / ``validate_config``: JSON config checking; errors name the file and the key.
- ``Service``: base class with stats and the ctl/stats HTTP server on 127.0.0.1.
- ``run_service``: the ``python3 -m ccdrill.standins.<mod> --config <file>`` entry point.
- ``KcxpClient``: a reconnecting KCXP (JSON lines over TCP) client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "ConfigError",
    "CtlError",
    "KcxpClient",
    "Service",
    "load_config",
    "log",
    "parse_hostport",
    "run_service",
    "topic_matches",
    "validate_config",
]

# Bounds for anything read from the network: a peer can send garbage, never exhaust us.
MAX_LINE = 1 << 20
MAX_HTTP_BODY = 1 << 20
HTTP_READ_TIMEOUT = 5.0
RECONNECT_DELAY = 0.5


def log(name: str, event: str, **fields: Any) -> None:
    """One line per event on stderr (supervisord keeps it)."""
    extra = " ".join(f"{k}={v!r}" for k, v in fields.items())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    print(f"{stamp} {name} {event}{' ' + extra if extra else ''}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- config


class ConfigError(Exception):
    """Invalid configuration; the message names the file and the key."""


def _type_names(typ: type | tuple[type, ...]) -> str:
    types = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _type_ok(value: Any, typ: type | tuple[type, ...]) -> bool:
    types = typ if isinstance(typ, tuple) else (typ,)
    # JSON true/false are Python bools, which are ints: never let them pass as numbers.
    if isinstance(value, bool):
        return bool in types
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def validate_config(
    data: Any,
    required: dict[str, type | tuple[type, ...]],
    optional: dict[str, object] | None = None,
    source: str = "<config>",
) -> dict:
    """Check an already-parsed config object; returns a copy with defaults filled in.

    A present optional key must have the type of its default (unless the default is None).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config {source}: top level must be a JSON object, got {type(data).__name__}")
    for key, typ in required.items():
        if key not in data:
            raise ConfigError(f"config {source}: missing required key {key!r}")
        if not _type_ok(data[key], typ):
            raise ConfigError(
                f"config {source}: key {key!r} must be {_type_names(typ)}, "
                f"got {type(data[key]).__name__} {data[key]!r}"
            )
    out = dict(data)
    for key, default in (optional or {}).items():
        if key not in out:
            out[key] = default
            continue
        if default is not None and out[key] is not None and not _type_ok(out[key], type(default)):
            raise ConfigError(
                f"config {source}: key {key!r} must be {type(default).__name__}, "
                f"got {type(out[key]).__name__} {out[key]!r}"
            )
    return out


def load_config(
    path: str,
    required: dict[str, type | tuple[type, ...]],
    optional: dict[str, object] | None = None,
) -> dict:
    """Read and validate a JSON config file. Raises ConfigError naming the file (and the key)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path}: cannot read: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config {path}: invalid JSON: {e}") from e
    return validate_config(data, required, optional, source=path)


def parse_hostport(value: str, key: str = "address", source: str = "<config>") -> tuple[str, int]:
    """'host:port' -> (host, port); ConfigError naming the key otherwise."""
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config {source}: key {key!r} must be 'host:port', got {value!r}")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------- service + ctl server


class CtlError(Exception):
    """A ctl request that cannot be served (unknown op, bad argument): HTTP 400."""


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error"}


class Service:
    """Base of every stand-in.

    Subclasses extend ``stats()`` (``s = super().stats(); s.update(...)``), extend
    ``handle_ctl`` (handle their ops, else ``return await super().handle_ctl(req)``) and
    override ``run()`` (start their servers, call ``await self.start_ctl(port)``, then wait).
    ``close()`` is awaited by ``run_service`` on SIGTERM/SIGINT.
    """

    kind = "service"

    def __init__(self, name: str, kind: str | None = None, ctl_port: int | None = None) -> None:
        self.name = name
        if kind is not None:
            self.kind = kind
        self.ctl_port = ctl_port
        self.started = time.time()
        self._ctl_server: asyncio.base_events.Server | None = None
        self.ctl_requests = 0
        self.ctl_bad = 0

    def log(self, event: str, **fields: Any) -> None:
        log(self.name, event, **fields)

    def stats(self) -> dict:
        return {"name": self.name, "kind": self.kind, "pid": os.getpid(),
                "started": self.started, "ts": time.time()}

    async def handle_ctl(self, req: dict) -> dict:
        raise CtlError(f"unknown op {req.get('op')!r}")

    async def start_ctl(self, port: int) -> int:
        """Serve GET /stats and POST /ctl on 127.0.0.1:port; returns the bound port (port 0 = any)."""
        self._ctl_server = await asyncio.start_server(self._serve_http, "127.0.0.1", port)
        bound = self._ctl_server.sockets[0].getsockname()[1]
        self.ctl_port = bound
        self.log("ctl_listening", port=bound)
        return bound

    async def run(self) -> None:
        """Default: only the ctl server. Subclasses override."""
        if self.ctl_port is not None:
            await self.start_ctl(self.ctl_port)
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self._ctl_server is not None:
            self._ctl_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ctl_server.wait_closed(), 1.0)
            self._ctl_server = None

    # HTTP/1.0, one request per connection: enough for checks and `ctl`, nothing more.
    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                # Only reading is time-limited: a slow ctl op (e.g. a dial) must not be cut off.
                method, path, raw = await asyncio.wait_for(self._read_request(reader), HTTP_READ_TIMEOUT)
            except _HttpError as e:
                status, body = e.status, {"error": e.message}
            except TimeoutError:
                status, body = 408, {"error": "request timeout"}
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                status, body = 400, {"error": "malformed request"}
            else:
                self.ctl_requests += 1
                status, body = await self._dispatch(method, path, raw)
            if status != 200:
                self.ctl_bad += 1
            data = json.dumps(body, default=str).encode()
            head = (f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head + data)
            await asyncio.wait_for(writer.drain(), HTTP_READ_TIMEOUT)
        except Exception as e:  # a broken client must never take the service down
            self.log("ctl_connection_error", error=repr(e))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        line = await reader.readline()
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[1].startswith("/") or not parts[2].startswith("HTTP/"):
            raise _HttpError(400, "malformed request line")
        method, path = parts[0].upper(), parts[1].split("?", 1)[0]
        length = 0
        for _ in range(100):
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _sep, v = h.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                try:
                    length = int(v.strip())
                except ValueError:
                    raise _HttpError(400, "bad Content-Length") from None
        else:
            raise _HttpError(400, "too many headers")
        if length < 0:
            raise _HttpError(400, "bad Content-Length")
        if length > MAX_HTTP_BODY:
            raise _HttpError(413, "body too large")
        raw = await reader.readexactly(length) if method == "POST" and length else b""
        return method, path, raw

    async def _dispatch(self, method: str, path: str, raw: bytes) -> tuple[int, dict]:
        if path == "/stats":
            if method != "GET":
                return 405, {"error": "use GET /stats"}
            try:
                return 200, self.stats()
            except Exception as e:  # a bug in stats() must not kill the service
                self.log("stats_error", error=repr(e))
                return 500, {"error": f"internal error: {e!r}"}
        if path != "/ctl":
            return 404, {"error": f"no such path {path!r}"}
        if method != "POST":
            return 405, {"error": "use POST /ctl"}
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return 400, {"error": f"invalid JSON: {e}"}
        if not isinstance(req, dict):
            return 400, {"error": "ctl body must be a JSON object"}
        try:
            answer = await self.handle_ctl(req)
        except CtlError as e:
            return 400, {"error": str(e)}
        except Exception as e:  # a bug in one op must not kill the service
            self.log("ctl_op_error", op=req.get("op"), error=repr(e))
            return 500, {"error": f"internal error: {e!r}"}
        return 200, answer if isinstance(answer, dict) else {"result": answer}


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def run_service(factory: Callable[[dict], Service], argv: list[str] | None = None) -> None:
    """Entry point: ``--config <file>`` -> ``factory(config_dict)`` -> ``await service.run()``.

    The file must hold a JSON object; the factory validates its keys (``validate_config``) and
    raises ConfigError; a message that does not name the file gets it prefixed. ConfigError
    (from the factory or from ``run()`` before anything is served) -> message on stderr, exit 2.
    SIGTERM/SIGINT -> ``service.close()``, exit 0. Anything else fatal -> exit 1.
    """
    parser = argparse.ArgumentParser(description="ccdrill stand-in")
    parser.add_argument("--config", required=True, help="JSON config file")
    args = parser.parse_args(argv)
    path = args.config
    try:
        cfg = load_config(path, {}, {})
        service = factory(cfg)
    except ConfigError as e:
        _config_exit(e, path)
    try:
        asyncio.run(_run_until_signal(service))
    except ConfigError as e:
        _config_exit(e, path)
    except OSError as e:  # e.g. port already in use
        print(f"error: {service.name}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(0)


def _config_exit(e: ConfigError, path: str) -> None:
    # validate_config() on a dict says "<config>": put the real file name there.
    msg = str(e).replace("<config>", path)
    if path not in msg:
        msg = f"config {path}: {msg}"
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


async def _run_until_signal(service: Service) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service.log("starting", kind=service.kind, pid=os.getpid())
    run_task = asyncio.ensure_future(service.run())
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task.done():
            run_task.result()  # re-raise a fatal error from run()
        else:
            service.log("stopping", reason="signal")
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run_task
    finally:
        stop_task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service.close(), 3.0)
    service.log("stopped")


# --------------------------------------------------------------------------- KCXP client


def topic_matches(pattern: str, topic: str) -> bool:
    """KCXP subscription match: exact, or prefix when the pattern ends with '*'."""
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


class KcxpClient:
    """Reconnecting KCXP client (JSON lines over TCP).

    ``await start()`` makes one connection attempt and returns either way; a background task
    keeps the connection up, retrying every 0.5 s, and re-sends every subscription after a
    reconnect. ``publish`` never blocks: while disconnected the message is dropped and counted.
    """

    def __init__(self, host: str, port: int, name: str = "kcxp-client") -> None:
        self.host = host
        self.port = port
        self.name = name
        self.connected = False
        self._subs: list[tuple[str, Callable[[str, dict], Any]]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._first_attempt: asyncio.Event | None = None
        self._closing = False
        self.published = 0
        self.dropped = 0
        self.received = 0
        self.malformed = 0
        self.callback_errors = 0
        self.connects = 0

    def stats(self) -> dict:
        return {"address": f"{self.host}:{self.port}", "connected": self.connected,
                "connects": self.connects, "published": self.published, "dropped": self.dropped,
                "received": self.received, "malformed": self.malformed,
                "callback_errors": self.callback_errors}

    async def start(self) -> None:
        if self._task is not None:
            return
        self._first_attempt = asyncio.Event()
        self._task = asyncio.create_task(self._maintain())
        await self._first_attempt.wait()

    async def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.connected

    def subscribe(self, topic: str, callback: Callable[[str, dict], Any]) -> None:
        self._subs.append((topic, callback))
        if self.connected:
            self._send({"op": "sub", "topic": topic})

    def publish(self, topic: str, msg: dict, **extra: Any) -> bool:
        """Returns True if handed to the connection, False if dropped (disconnected)."""
        env = {"op": "pub", "topic": topic, "msg": msg}
        env.update(extra)
        if self.connected and self._send(env):
            self.published += 1
            return True
        self.dropped += 1
        return False

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._drop_connection()

    # -- internals

    def _send(self, obj: dict) -> bool:
        w = self._writer
        if w is None or w.is_closing():
            return False
        # A broker that stopped reading must not grow our memory without bound.
        if w.transport.get_write_buffer_size() > 8 * MAX_LINE:
            return False
        w.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        return True

    def _drop_connection(self) -> None:
        self.connected = False
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None

    def _on_connect(self) -> None:
        """Hook run right after (re)connecting, before subscriptions are re-sent."""

    def _deliver(self, env: dict) -> None:
        """Dispatch one delivered envelope to the matching callbacks."""
        topic, msg = env["topic"], env["msg"]
        for pattern, cb in list(self._subs):
            if topic_matches(pattern, topic):
                try:
                    cb(topic, msg)
                except Exception as e:  # one bad callback must not break the connection
                    self.callback_errors += 1
                    log(self.name, "kcxp_callback_error", topic=topic, error=repr(e))

    async def _maintain(self) -> None:
        was_up = False
        try:
            while not self._closing:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port, limit=MAX_LINE), 2.0)
                except (TimeoutError, OSError) as e:
                    if self._first_attempt is not None:
                        self._first_attempt.set()
                    if was_up:
                        log(self.name, "kcxp_reconnect_failed", error=repr(e))
                        was_up = False
                    await asyncio.sleep(RECONNECT_DELAY)
                    continue
                self._writer = writer
                self.connected = True
                self.connects += 1
                was_up = True
                log(self.name, "kcxp_connected", address=f"{self.host}:{self.port}")
                self._on_connect()
                for topic in dict.fromkeys(t for t, _ in self._subs):
                    self._send({"op": "sub", "topic": topic})
                if self._first_attempt is not None:
                    self._first_attempt.set()
                await self._read_loop(reader)
                self._drop_connection()
                log(self.name, "kcxp_disconnected", address=f"{self.host}:{self.port}")
                await asyncio.sleep(RECONNECT_DELAY)
        finally:
            self._drop_connection()
            if self._first_attempt is not None:
                self._first_attempt.set()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError, OSError):
                return  # overlong line or reset: reconnect
            if not line:
                return
            if not line.endswith(b"\n"):
                return  # EOF mid-line
            try:
                env = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.malformed += 1
                continue
            if not (isinstance(env, dict) and isinstance(env.get("topic"), str)
                    and isinstance(env.get("msg"), dict)):
                self.malformed += 1
                continue
            self.received += 1
            self._deliver(env)


async def run_psql(psql: str, conn: str, password: str, sql: str, params: dict[str, str],
                   timeout: float) -> tuple[int, list[str], str]:
    """Run `sql` with psql (unaligned, '|'-separated, tuples only, stop on the first error), fed on stdin
    so that psql quotes the `params` itself (:'name'). Returns (exit code, output lines, last error line);
    TimeoutError after `timeout` s. The psql process never outlives the call (killed on timeout/cancel)."""
    env = dict(os.environ, PGPASSWORD=password)
    env.pop("PGSERVICE", None)  # only the caller's config decides where we connect
    args = [psql, "-X", "-A", "-t", "-q", "-F", "|", "-w", "-v", "ON_ERROR_STOP=1"]
    for k, v in params.items():
        args += ["-v", f"{k}={v}"]
    args.append(conn)
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(sql.encode()), timeout)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    errors = err.decode("utf-8", "replace").strip().splitlines()
    return proc.returncode, out.decode("utf-8", "replace").splitlines(), errors[-1] if errors else ""
