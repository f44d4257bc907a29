"""SMS and email senders (notifier) and the SMS gateway (smsgw): real processes on 127.0.0.1 random
ports; the mail relay is a minimal SMTP sink in the test (it records every message it accepts)."""

from __future__ import annotations

import email
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ccdrill.standins import ctl
from ccdrill.standins.notifier import check_message, maildir_ids
from ccdrill.standins.smsgw import check_sms

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """Accepts every message (EHLO, MAIL, RCPT, DATA, QUIT) and keeps it."""

    def __init__(self, port: int | None = None) -> None:
        self.messages: list[email.message.Message] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 sink ESMTP\r\n")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    verb = line[:4].upper()
                    if verb == b"DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b""):
                                break
                            data += chunk
                        sink.messages.append(email.message_from_bytes(data))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", port or free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proc:
    def __init__(self, tmp: Path, module: str, cfg: dict) -> None:
        self.cfg_path = tmp / f"{module}.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.ctl_port = cfg["ctl_port"]
        self.proc = subprocess.Popen([sys.executable, "-m", f"ccdrill.standins.{module}", "--config",
                                      str(self.cfg_path)], env={**os.environ, "PYTHONPATH": SRC},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                if ctl.request(self.ctl_port, timeout=1)["pid"] == self.proc.pid:
                    return
            except RuntimeError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not start: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)

    def stats(self) -> dict:
        return ctl.request(self.ctl_port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def world(tmp_path):
    sink = SmtpSink()
    sms_port = free_port()
    gw = Proc(tmp_path, "smsgw", {"name": "smsgw", "listen": f"127.0.0.1:{sms_port}", "ctl_port": free_port()})
    submit = free_port()
    cfg = {"name": "notifier", "listen": f"127.0.0.1:{submit}", "ctl_port": free_port(),
           "sms_gateway": f"127.0.0.1:{sms_port}", "smtp_relay": f"127.0.0.1:{sink.port}",
           "mail_from": "service@lab.test", "mail_domain": "lab.test", "spool": str(tmp_path / "spool"),
           "poll_s": 0.05, "retry_s": 0.2}
    nt = Proc(tmp_path, "notifier", cfg)
    channel = tmp_path / "channel.json"
    channel.write_text(json.dumps({"notifier": f"127.0.0.1:{submit}"}))
    yield {"sink": sink, "gw": gw, "nt": nt, "channel": channel, "cfg": cfg, "tmp": tmp_path}
    nt.stop()
    gw.stop()
    sink.close()


def client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccdrill.standins.notifier", "submit", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=30)


def wait(pred, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sms_counted_at_the_gateway_and_email_relayed_with_its_message_id(world):
    r = client("--channel", str(world["channel"]), "--kind", "sms", "--to", "13800000000", "--text", "hi",
               "--count", "3", "--tag", "s")
    sms = json.loads(r.stdout)["queued"]
    r = client("--channel", str(world["channel"]), "--kind", "email", "--to", "a@lab.test", "--text", "您好",
               "--count", "2", "--tag", "m", "--subject", "Notice")
    assert r.returncode == 0, r.stderr
    mails = json.loads(r.stdout)["queued"]
    wait(lambda: world["nt"].stats()["sent"] == {"sms": 3, "email": 2})
    senders = ctl.request(world["gw"].ctl_port, {"op": "lookup", "ids": sms + ["nope"]})["senders"]
    assert senders == {**{i: "127.0.0.1" for i in sms}, "nope": None}
    assert world["gw"].stats()["received"] == 3
    ids = sorted(m["Message-ID"] for m in world["sink"].messages)
    assert ids == sorted(f"<{i}@lab.test>" for i in mails)
    assert world["sink"].messages[0].get_payload(decode=True).decode().startswith("您好")
    s = world["nt"].stats()
    assert s["pending"] == 0 and s["by_relay"] == {"127.0.0.1": 2} and s["submitted"] == 5


def test_messages_wait_in_the_outbox_while_the_relay_is_down_and_none_is_lost(world, tmp_path):
    port = world["sink"].port
    world["sink"].close()
    r = client("--channel", str(world["channel"]), "--kind", "email", "--to", "a@lab.test", "--text", "x",
               "--count", "4", "--tag", "late")
    assert r.returncode == 0
    wait(lambda: world["nt"].stats()["attempts_failed"] >= 4)
    assert world["nt"].stats()["pending"] == 4
    sink = SmtpSink(port)
    try:
        wait(lambda: world["nt"].stats()["sent"]["email"] == 4)
        assert len(sink.messages) == 4 and world["nt"].stats()["pending"] == 0
    finally:
        sink.close()


def test_bad_submission_is_refused_naming_the_field_and_nothing_is_queued(world):
    r = client("--channel", str(world["channel"]), "--kind", "sms", "--to", "not-a-number", "--text", "x")
    assert r.returncode == 2 and "'to'" in r.stderr
    import http.client

    host, port = world["cfg"]["listen"].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", "/submit", body=json.dumps({"id": "a b", "kind": "sms", "to": "1380000", "text": "x"}))
    resp = conn.getresponse()
    assert resp.status == 400 and "'id'" in json.loads(resp.read())["error"]
    assert world["nt"].stats()["rejected"] == 1 and world["nt"].stats()["submitted"] == 0
    assert os.listdir(Path(world["cfg"]["spool"]) / "outbox") == []


def test_client_names_a_bad_channel_file_and_counts_a_stopped_notifier(world, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"notifier": "no-port"}))
    r = client("--channel", str(bad), "--kind", "sms", "--to", "13800000000", "--text", "x")
    assert r.returncode == 2 and str(bad) in r.stderr and "notifier" in r.stderr
    world["nt"].stop()
    r = client("--channel", str(world["channel"]), "--kind", "sms", "--to", "13800000000", "--text", "x",
               "--count", "2")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["queued"] == [] and len(out["errors"]) == 2


def test_bad_configuration_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "n.json"
    cfg.write_text(json.dumps({"name": "n", "listen": "127.0.0.1:1", "ctl_port": 1, "sms_gateway": "x",
                               "smtp_relay": "h:25", "mail_from": "a@b", "mail_domain": "b"}))
    r = subprocess.run([sys.executable, "-m", "ccdrill.standins.notifier", "--config", str(cfg)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=20)
    assert r.returncode == 2 and "sms_gateway" in r.stderr and str(cfg) in r.stderr


def test_gateway_counts_a_resent_id_once():
    from ccdrill.standins.smsgw import SmsGateway

    gw = SmsGateway({"name": "g", "listen": "127.0.0.1:9", "ctl_port": 0})
    assert gw.accept({"id": "a1", "to": "13800000000", "text": "x"}, "10.0.0.1")["duplicate"] is False
    assert gw.accept({"id": "a1", "to": "13800000000", "text": "x"}, "10.0.0.2")["duplicate"] is True
    assert gw.received == 1 and gw.duplicates == 1 and gw.by_sender == {"10.0.0.1": 1}


@pytest.mark.parametrize("msg, field", [
    ({"id": "x", "kind": "fax", "to": "1", "text": "t"}, "'kind'"),
    ({"id": "x", "kind": "email", "to": "nobody", "text": "t"}, "'to'"),
    ({"id": "x", "kind": "sms", "to": "13800000000", "text": ""}, "'text'"),
    ({"id": "x", "kind": "email", "to": "a@b.c", "text": "t", "subject": "a\nBcc: x@y"}, "'subject'"),
])
def test_check_message_names_the_bad_field(msg, field):
    with pytest.raises(ValueError, match=field):
        check_message(msg)
    with pytest.raises(ValueError, match="'to'"):
        check_sms({"id": "x", "to": "abc", "text": "t"})


def test_maildir_ids_reads_new_and_cur(tmp_path):
    for sub, name, mid in (("new", "1", "a@x"), ("cur", "2", "b@x")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / name).write_text(f"From: s@x\nMessage-ID: <{mid}>\n\nbody\n")
    (tmp_path / "new" / "3").write_text("From: s@x\n\nno id\n")
    assert sorted(maildir_ids(str(tmp_path))) == ["", "a@x", "b@x"]
