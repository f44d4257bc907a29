"""Steps of the SMS/email batch (features/migration_4_notify.feature): MIG-NT1, MIG-NT2, POST-NT.

Messages are sent the way the application sends them (`ccdrill-notify` on an application server,
through the sender its channel file names) and counted where they arrive (ccdrill.checks.notify).
POST-NT follows Chaos Toolkit's shape: steady state, fault (ccdrill.faults.services: the Shenzhen
sender stopped), the operators' response (playbooks/dr/notify_shanghai.yml), hypothesis, and a
rollback that always runs (the sender started again, playbooks/notify.yml on the application servers
puts the channel back on Shenzhen, and the steady state is checked again).
"""

from __future__ import annotations

import time

import pytest
import yaml
from pytest_bdd import given, parsers, then, when

from ccdrill.checks import notify as nt
from ccdrill.faults import services
from ccdrill.lab.runbook import read_ledger

from .common import ServiceRollback
from .common import measure as _measure
from .common import play as _play

BATCH = "migration/05_notify.yml"
PROGRAM = ["/opt/ccdrill/ccdrill/standins/notifier.py", "/opt/ccdrill/ccdrill/standins/smsgw.py",
           "/opt/ccdrill/ccdrill/standins/common.py", "/etc/supervisor/conf.d/notifier.conf"]


def _cfg() -> dict:
    from .conftest import INVENTORY

    return yaml.safe_load((INVENTORY / "group_vars" / "all" / "notify.yml").read_text())


def _maildir(cfg: dict) -> str:
    return f"/home/{cfg['notify_mailbox_user']}/Maildir"


def _app(cc, site: str) -> str:
    hosts = [h for h in cc.lab.inv.hosts_of("app_server") if h.startswith(f"{site}-")]
    assert hosts, f"no application server in {site}"
    return hosts[0]


def _send_and_count(cc, ctx, app: str, sms: int, emails: int, tag: str, mail_host: str) -> dict:
    cfg = _cfg()
    sent_sms = nt.send(cc.lab, app, "sms", sms, f"{tag}-sms") if sms else {"queued": [], "errors": []}
    sent_mail = nt.send(cc.lab, app, "email", emails, f"{tag}-mail") if emails else {"queued": [], "errors": []}
    assert not sent_sms["errors"] and not sent_mail["errors"], (sent_sms, sent_mail)
    senders, mail = nt.wait_arrived(cc.lab, cfg["notify_sms_gateway"], cfg["notify_sms_ctl_port"], sent_sms["queued"],
                                    mail_host, _maildir(cfg), sent_mail["queued"])
    names = {cc.lab.inv.address(h): h for h in cc.lab.inv.hosts_of("notifier")}
    counted: dict[str, int] = {}
    for ip in senders.values():
        key = names.get(ip, ip) if ip else "not received"
        counted[key] = counted.get(key, 0) + 1
    got = {"notifier": sent_sms.get("notifier") or sent_mail.get("notifier"), "sms_by_sender": counted,
           "emails": sent_mail["queued"], "delivered": mail["found"], "mail_host": mail_host}
    _measure(ctx, f"sent_{tag}", {k: v for k, v in got.items() if k != "emails"} | {"emails": len(sent_mail["queued"]),
                                                                                   "delivered": len(mail["found"])})
    return got


# --- Given ------------------------------------------------------------------------------------------
@given("the application servers send SMS and email through Shanghai's sender")
def baseline_shanghai(callcenter, ctx):
    cfg = _cfg()
    assert "mig_notify" not in read_ledger(callcenter.lab)["steps"], "the ledger already records mig_notify"
    sh = cfg["notify_sites"]["shanghai"]
    for app in callcenter.lab.inv.hosts_of("app_server"):
        assert nt.channel(callcenter.lab, app)["notifier"].startswith(sh["notifier"] + ":"), app
    got = _send_and_count(callcenter, ctx, _app(callcenter, "sh"), 2, 2, f"base{int(time.time())}", sh["mail"])
    assert got["sms_by_sender"] == {sh["notifier"]: 2}, got
    assert len(got["delivered"]) == 2, got


@given("the SMS/email batch has run")
def batch_has_run(callcenter, ctx, timeline):
    if "mig_notify" not in read_ledger(callcenter.lab)["steps"]:
        run = _play(callcenter, timeline, BATCH)
        assert run.rc == 0, f"{BATCH} failed:\n{run.output[-4000:]}"


# --- When -------------------------------------------------------------------------------------------
@when(parsers.re(r"the operators run the SMS/email batch(?P<again> again)?"))
def run_batch(callcenter, ctx, timeline, again):
    ctx["run"] = _play(callcenter, timeline, BATCH)
    _measure(ctx, "batch_again" if again else "batch", {"rc": ctx["run"].rc, "changed": ctx["run"].changed,
                                                        "seconds": ctx["run"].seconds})
    if not again:
        assert ctx["run"].rc == 0, f"{BATCH} failed:\n{ctx['run'].output[-4000:]}"


@when(parsers.parse("the {site} application server sends {sms:d} SMS and {emails:d} emails"))
def app_sends(callcenter, ctx, site, sms, emails):
    cfg = _cfg()
    code = "sz" if site == "Shenzhen" else "sh"
    # Delivery is awaited on the mail host the channel should reach; the Then steps count both.
    mail_host = ctx.get("expect_mail") or cfg["notify_sites"]["shenzhen"]["mail"]
    ctx["sent"] = _send_and_count(callcenter, ctx, _app(callcenter, code), sms, emails, f"{code}{int(time.time())}",
                                  mail_host)


# --- Then -------------------------------------------------------------------------------------------
@then("Shenzhen's sender runs the same program as Shanghai's, with the same configuration but the mail relay")
def same_program(callcenter, ctx):
    cfg = _cfg()
    sh, sz = cfg["notify_sites"]["shanghai"]["notifier"], cfg["notify_sites"]["shenzhen"]["notifier"]
    same = nt.same_files(callcenter.lab, sh, sz, PROGRAM)
    a = nt.read_json(callcenter.lab, sh, "/etc/ccdrill/notifier.json")
    b = nt.read_json(callcenter.lab, sz, "/etc/ccdrill/notifier.json")
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    detail = read_ledger(callcenter.lab)["steps"]["mig_notify"]["detail"]
    _measure(ctx, "copied", {"same_files": same, "config_differs_in": differ, "copied_files": detail["copied_files"],
                             "relays": {sh: a.get("smtp_relay"), sz: b.get("smtp_relay")}})
    assert all(same.values()), f"program files differ between {sh} and {sz}: {same}"
    assert differ == ["smtp_relay"], f"{sh} and {sz} configurations differ in {differ}"
    assert int(detail["copied_files"]) > 10, detail["copied_files"]
    rc, out, _ = callcenter.lab.exec(sz, ["supervisorctl", "status", "notifier"], 10)
    assert "RUNNING" in out, out


@then(parsers.parse("the application servers' sending channel names {site} sender"))
def channel_names(callcenter, ctx, site):
    key = "shenzhen" if site.startswith("Shenzhen") else "shanghai"
    want = _cfg()["notify_sites"][key]["notifier"]
    got = {app: nt.channel(callcenter.lab, app)["notifier"] for app in callcenter.lab.inv.hosts_of("app_server")}
    _measure(ctx, "channel", got)
    assert all(v.startswith(want + ":") for v in got.values()), f"the channel should name {want}: {got}"


@then(parsers.parse("the SMS gateway counted {count:d} SMS, all from {host}"))
def sms_counted(ctx, count, host):
    assert ctx["sent"]["sms_by_sender"] == {host: count}, f"expected {count} SMS from {host}: {ctx['sent']}"


@then(parsers.parse("the {service} delivered the {count:d} emails, by Message-ID"))
def mail_delivered(callcenter, ctx, service, count):
    cfg = _cfg()
    host = cfg["notify_sites"]["shenzhen" if service == "new mail gateway" else "shanghai"]["mail"]
    got = nt.delivered(callcenter.lab, host, _maildir(cfg), ctx["sent"]["emails"])
    _measure(ctx, f"delivered_{host}", {"found": len(got["found"]), "maildir_total": got["total"]})
    assert len(got["found"]) == count == len(ctx["sent"]["emails"]), f"{host} delivered {got['found']}"


@then(parsers.parse("the {service} received none of them"))
def mail_not_delivered(callcenter, ctx, service):
    cfg = _cfg()
    host = cfg["notify_sites"]["shenzhen" if service == "new mail gateway" else "shanghai"]["mail"]
    got = nt.delivered(callcenter.lab, host, _maildir(cfg), ctx["sent"]["emails"])
    _measure(ctx, f"not_delivered_{host}", {"found": len(got["found"]), "maildir_total": got["total"]})
    assert not got["found"], f"{host} got {got['found']}"


@then("the batch's own test sent SMS from Shenzhen and email through the Exchange service before the change, "
      "through the new mail gateway after it")
def batch_test_recorded(callcenter, ctx):
    cfg = _cfg()
    d = read_ledger(callcenter.lab)["steps"]["mig_notify"]["detail"]
    _measure(ctx, "batch_test", {k: d[k] for k in ("nt1_sms_senders", "nt1_email_delivered_exchange",
                                                  "nt2_email_delivered_gateway", "smtp_relay")})
    sz = cfg["notify_sites"]["shenzhen"]
    assert d["nt1_sms_senders"] == [callcenter.lab.inv.address(sz["notifier"])], d
    assert int(d["nt1_email_delivered_exchange"]) == len(d["nt1_email"]) > 0, d
    assert int(d["nt2_email_delivered_gateway"]) == len(d["nt2_email"]) > 0, d
    # Counted again now, in the Maildirs themselves.
    ids = d["nt1_email"] + d["nt2_email"]
    ex = nt.delivered(callcenter.lab, cfg["notify_sites"]["shanghai"]["mail"], _maildir(cfg), ids)
    gw = nt.delivered(callcenter.lab, sz["mail"], _maildir(cfg), ids)
    assert sorted(ex["found"]) == sorted(d["nt1_email"]) and sorted(gw["found"]) == sorted(d["nt2_email"]), (ex, gw)


# --- POST-NT ------------------------------------------------------------------------------------------
@pytest.fixture
def notify_rollback(request, callcenter, timeline, ctx) -> ServiceRollback:
    """Undo the nemesis, fail back with playbooks/notify.yml on the application servers, steady state."""
    rb = ServiceRollback(callcenter, timeline, ctx, "notify.yml", "app_server",
                         lambda: _steady_state(callcenter, ctx))
    request.addfinalizer(lambda: rb.faults and rb.run())
    return rb


def _steady_state(cc, ctx) -> dict:
    sz = _cfg()["notify_sites"]["shenzhen"]
    got = _send_and_count(cc, ctx, _app(cc, "sz"), 1, 1, f"steady{int(time.time())}", sz["mail"])
    assert got["sms_by_sender"] == {sz["notifier"]: 1}, got
    assert len(got["delivered"]) == 1, f"the new mail gateway did not deliver: {got}"
    return {"sms_by_sender": got["sms_by_sender"], "delivered": len(got["delivered"])}


@given("the steady state: the application servers send through Shenzhen's sender and the new mail gateway")
def steady_shenzhen(callcenter, ctx, timeline):
    batch_has_run(callcenter, ctx, timeline)
    _measure(ctx, "steady_state_before", _steady_state(callcenter, ctx))


@when(parsers.parse("the nemesis stops the sender on {host}"))
def nemesis_stops_sender(callcenter, ctx, notify_rollback, timeline, host):
    fault = services.service_stop(callcenter.lab, host, "notifier", timeline)
    notify_rollback.faults.append(fault)
    _measure(ctx, "fault", fault.as_dict())


@then("the Shenzhen application server cannot hand its messages over")
def cannot_hand_over(callcenter, ctx):
    got = nt.send(callcenter.lab, _app(callcenter, "sz"), "sms", 2, f"fault{int(time.time())}")
    _measure(ctx, "during_fault", {"queued": len(got["queued"]), "errors": len(got["errors"])})
    assert not got["queued"] and len(got["errors"]) == 2, f"the stopped sender still took messages: {got}"


@when("the operators run dr/notify_shanghai.yml")
def operators_switch_back(callcenter, ctx, timeline):
    run = _play(callcenter, timeline, "dr/notify_shanghai.yml")
    _measure(ctx, "response", {"rc": run.rc, "changed": run.changed, "seconds": run.seconds})
    assert run.rc == 0, f"dr/notify_shanghai.yml failed:\n{run.output[-4000:]}"
    ctx["expect_mail"] = _cfg()["notify_sites"]["shanghai"]["mail"]


@then("after the rollback the application servers send through Shenzhen's sender again")
def after_rollback(notify_rollback):
    notify_rollback.run()
