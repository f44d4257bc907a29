"""Steps of the web-chat batch (features/migration_1_webchat.feature): MIG-CS1, MIG-CS2, POST-CS.

Customers reach the web chat the way the plan says: the website's home page and its web-chat entry,
from a lab host through the lab's DNS (ccdrill.checks.webchat). What the servers hold is counted in
their databases. POST-CS follows Chaos Toolkit's shape: steady state, fault (ccdrill.faults.services),
the operators' response (playbooks/dr/webchat_shanghai.yml), hypothesis, and a rollback that always
runs (the fault undone, playbooks/webchat.yml on the website puts the entry back on the new domain,
and the steady state is checked again).
"""

from __future__ import annotations

import time

import pytest
from pytest_bdd import given, parsers, then, when

from ccdrill.checks import webchat as wc
from ccdrill.faults import services
from ccdrill.lab.runbook import read_ledger

from .common import ServiceRollback
from .common import measure as _measure
from .common import play as _play

BATCH = "migration/01_webchat.yml"


def _sites(cc) -> dict:
    """webchat_sites of the inventory, with the lab's domain filled in."""
    import yaml

    from .conftest import INVENTORY

    sites = yaml.safe_load((INVENTORY / "group_vars" / "all" / "webchat.yml").read_text())["webchat_sites"]
    domain = cc.lab.inv.vars.get("lab_domain", "lab.ccdrill")
    return {k: {**v, "domain": v["domain"].replace("{{ lab_domain }}", domain)} for k, v in sites.items()}


def _website(cc) -> str:
    return cc.lab.inv.hosts_of("website")[0]


def _customer_host(cc) -> str:
    return cc.carrier_host


def _entry(cc) -> str:
    url = wc.entry_url(cc.lab, _customer_host(cc), _website(cc))
    assert url, f"the home page of {_website(cc)} has no web-chat entry"
    return url


# --- Given ------------------------------------------------------------------------------------------
@given("Shanghai's web chat serves customers through the website's entry")
def shanghai_serves(callcenter, ctx):
    sites = _sites(callcenter)
    assert "mig_webchat" not in read_ledger(callcenter.lab)["steps"], "the ledger already records mig_webchat"
    one = wc.chat_once(callcenter.lab, _customer_host(callcenter), _website(callcenter), "steady-sh", "hello")
    _measure(ctx, "before", one)
    assert one.get("entry") == f"http://{sites['shanghai']['domain']}/", one
    assert one.get("posted", {}).get("site") == sites["shanghai"]["host"], one
    assert one["posted"]["version"] == sites["shanghai"]["version"], one
    ctx["sh_before"] = wc.summary(callcenter.lab, sites["shanghai"]["host"])
    assert ctx["sh_before"]["messages"] >= 9, f"Shanghai's seeded conversations are missing: {ctx['sh_before']}"


@given("the web-chat batch has run")
def batch_has_run(callcenter, ctx, timeline):
    if "mig_webchat" not in read_ledger(callcenter.lab)["steps"]:
        run = _play(callcenter, timeline, BATCH)
        assert run.rc == 0, f"{BATCH} failed:\n{run.output[-4000:]}"


# --- When -------------------------------------------------------------------------------------------
@when(parsers.parse("a customer posts {count:d} messages through the website's web-chat entry"))
def customer_posts(callcenter, ctx, count):
    posts = wc._customer(callcenter.lab, _customer_host(callcenter), _website(callcenter), "before-migration",
                         "a question before the migration", count, 0.05, 60)
    ctx.setdefault("posts", []).extend(posts)
    ok = [p for p in posts if "posted" in p]
    assert len(ok) == count, f"{count} posts offered, {len(ok)} acknowledged: {posts}"


@when("the operators run the web-chat batch while customers keep chatting through the entry")
def run_batch_with_writer(callcenter, ctx, timeline):
    writer = wc.Writer(callcenter.lab, _customer_host(callcenter), _website(callcenter), "during-migration")
    try:
        ctx["run"] = _play(callcenter, timeline, BATCH)
        time.sleep(2)  # a few posts through the new entry too
    finally:
        posts = writer.stop()
    ctx.setdefault("posts", []).extend(posts)
    by_site: dict[str, int] = {}
    for p in posts:
        key = p.get("posted", {}).get("site", "failed")
        by_site[key] = by_site.get(key, 0) + 1
    _measure(ctx, "posts_during_migration", by_site)
    _measure(ctx, "batch", {"rc": ctx["run"].rc, "changed": ctx["run"].changed, "seconds": ctx["run"].seconds})
    assert ctx["run"].rc == 0, f"{BATCH} failed:\n{ctx['run'].output[-4000:]}"


@when("the operators run the web-chat batch again")
def run_batch_again(callcenter, ctx, timeline):
    ctx["run"] = _play(callcenter, timeline, BATCH)
    _measure(ctx, "batch_again", {"rc": ctx["run"].rc, "changed": ctx["run"].changed})


@when("a customer follows the website's web-chat entry and posts a message")
def customer_follows_entry(callcenter, ctx):
    sites = _sites(callcenter)
    ctx["counts_before"] = {s: wc.summary(callcenter.lab, v["host"]) for s, v in sites.items()}
    ctx["one"] = wc.chat_once(callcenter.lab, _customer_host(callcenter), _website(callcenter),
                              f"after-{int(time.time())}", "a question after the migration")
    _measure(ctx, "customer", ctx["one"])


# --- Then -------------------------------------------------------------------------------------------
@then(parsers.parse("{host} runs Apache, MariaDB and the PHP application under supervisord"))
def runs_stack(callcenter, ctx, host):
    rc, out, _ = callcenter.lab.exec(host, ["supervisorctl", "status", "apache2", "mariadb"], 15)
    states = dict(line.split()[:2] for line in out.splitlines() if line.strip())
    _measure(ctx, f"{host}_programs", states)
    assert states == {"apache2": "RUNNING", "mariadb": "RUNNING"}, out
    rc, out, err = callcenter.lab.exec(host, ["php", "-r", "echo PHP_VERSION;"], 15)
    assert rc == 0 and out.startswith("8."), f"{host}: php: {out} {err}"


def _detail(cc) -> dict:
    return read_ledger(cc.lab)["steps"]["mig_webchat"]["detail"]


@then("the test copy held every Shanghai message with the same checksum")
def test_copy_equal(callcenter, ctx):
    copy = _detail(callcenter)["test_copy"]
    _measure(ctx, "test_copy", copy)
    assert copy["equal"] and copy["source"]["checksum"] == copy["local"]["checksum"], copy
    # What was copied is still Shanghai's: the same rows, re-counted on Shanghai now.
    sh = _sites(callcenter)["shanghai"]["host"]
    now = wc.summary(callcenter.lab, sh, f"id <= {copy['source']['max_id']}")
    assert now == copy["source"], f"Shanghai's first {copy['source']['max_id']} ids now {now}, copied {copy['source']}"
    assert copy["source"]["messages"] >= ctx["sh_before"]["messages"] + 5, (copy, ctx["sh_before"])


@then(parsers.parse("the version-upgrade test found release {version} on schema {schema:d} serving every copied "
                    "message"))
def upgrade_test(callcenter, ctx, version, schema):
    test = _detail(callcenter)["upgrade_test"]
    copy = _detail(callcenter)["test_copy"]
    _measure(ctx, "upgrade_test", {k: test[k] for k in ("ok", "version", "counts")})
    assert test["ok"], test
    assert (test["version"]["version"], test["version"]["schema"]) == (version, schema), test["version"]
    assert test["counts"]["messages"] == copy["copied_messages"], (test["counts"], copy)
    assert test["read_back"][0]["channel"] == "app", test["read_back"]
    sz = _sites(callcenter)["shenzhen"]["host"]
    assert wc.schema_version(callcenter.lab, sz) == schema


@then(parsers.parse("the new domain resolves to {host} from both sites"))
def new_domain_resolves(callcenter, ctx, host):
    domain = _sites(callcenter)["shenzhen"]["domain"]
    want = callcenter.lab.inv.address(host)
    got = {h: wc.resolve(callcenter.lab, h, domain) for h in (_customer_host(callcenter), host)}
    _measure(ctx, "new_domain", {"domain": domain, "resolved": got})
    assert set(got.values()) == {want}, f"{domain} should name {host} ({want}): {got}"


@then(parsers.re(r"the website's web-chat entry points to the (?P<which>new|old) domain"))
def entry_points_to(callcenter, ctx, which):
    site = "shenzhen" if which == "new" else "shanghai"
    want = f"http://{_sites(callcenter)[site]['domain']}/"
    got = _entry(callcenter)
    _measure(ctx, "entry", got)
    assert got == want, f"the website's entry is {got}, the plan wants {want}"


@then("every message of Shanghai is in Shenzhen with the same content, including those written after the test copy")
def nothing_lost(callcenter, ctx):
    sites = _sites(callcenter)
    sh, sz = sites["shanghai"]["host"], sites["shenzhen"]["host"]
    source = wc.summary(callcenter.lab, sh)
    local = wc.summary(callcenter.lab, sz, f"id <= {source['max_id']} AND id < 1000000")
    test_max = _detail(callcenter)["test_copy"]["source"]["max_id"]
    after = wc.summary(callcenter.lab, sh, f"id > {test_max}")
    _measure(ctx, "migrated", {"shanghai": source, "shenzhen": local, "written_after_test_copy": after["messages"]})
    assert local == source, f"Shanghai {source}, Shenzhen holds {local}"
    assert after["messages"] > 0, "no message was written in Shanghai after the test copy: nothing proves the catch-up"


@then("every message a customer posted before and during the migration is stored in Shenzhen")
def customers_posts_kept(callcenter, ctx):
    acked = [p["posted"]["uid"] for p in ctx["posts"] if "posted" in p]
    failed = [p for p in ctx["posts"] if "posted" not in p]
    sz = _sites(callcenter)["shenzhen"]["host"]
    found = wc.uids(callcenter.lab, sz, acked)
    _measure(ctx, "customer_posts", {"acknowledged": len(acked), "failed": len(failed),
                                     "in_shenzhen": len(found)})
    assert not failed, f"{len(failed)} posts failed during the migration: {failed[:3]}"
    assert len(found) == len(acked), f"{len(acked) - len(found)} acknowledged messages are not in Shenzhen"


@then("the new release in Shenzhen answered and stored the message, and Shanghai did not")
def served_by_shenzhen(callcenter, ctx):
    sites = _sites(callcenter)
    one = ctx["one"]
    assert "posted" in one, one
    assert (one["posted"]["site"], one["posted"]["version"]) == (sites["shenzhen"]["host"],
                                                                 sites["shenzhen"]["version"]), one
    assert [m["uid"] for m in one["read_back"]] == [one["posted"]["uid"]], one
    after = {s: wc.summary(callcenter.lab, v["host"]) for s, v in sites.items()}
    grew = {s: after[s]["messages"] - ctx["counts_before"][s]["messages"] for s in sites}
    _measure(ctx, "rows_added", grew)
    assert grew == {"shenzhen": 1, "shanghai": 0}, grew


# --- POST-CS: steady state, fault, response, hypothesis, rollback ------------------------------------
@pytest.fixture
def webchat_rollback(request, callcenter, timeline, ctx) -> ServiceRollback:
    """Undo the nemesis, fail back, check the steady state again. The failback: the website's entry follows
    the ledger again (the new domain); only the website's plays of webchat.yml, the servers themselves were
    not changed by the response."""
    rb = ServiceRollback(callcenter, timeline, ctx, "webchat.yml", "website", lambda: _steady_state(callcenter))
    request.addfinalizer(lambda: rb.faults and rb.run())
    return rb


def _steady_state(cc) -> dict:
    sites = _sites(cc)
    one = wc.chat_once(cc.lab, _customer_host(cc), _website(cc), f"steady-{int(time.time())}", "steady?")
    assert one.get("entry") == f"http://{sites['shenzhen']['domain']}/", one
    assert one.get("posted", {}).get("site") == sites["shenzhen"]["host"], one
    assert one["posted"]["version"] == sites["shenzhen"]["version"], one
    assert wc.uids(cc.lab, sites["shenzhen"]["host"], [one["posted"]["uid"]]), one
    return {"entry": one["entry"], "site": one["posted"]["site"], "version": one["posted"]["version"]}


@given("the steady state: customers following the website's entry are served by Shenzhen")
def steady_shenzhen(callcenter, ctx, timeline):
    batch_has_run(callcenter, ctx, timeline)
    _measure(ctx, "steady_state_before", _steady_state(callcenter))


@when(parsers.parse("the nemesis stops Apache on {host}"))
def nemesis_stops_apache(callcenter, ctx, webchat_rollback, timeline, host):
    fault = services.service_stop(callcenter.lab, host, "apache2", timeline)
    webchat_rollback.faults.append(fault)
    _measure(ctx, "fault", fault.as_dict())


@then("a customer following the website's entry gets no answer")
def customer_no_answer(callcenter, ctx):
    one = wc.chat_once(callcenter.lab, _customer_host(callcenter), _website(callcenter), "during-fault", "anyone?")
    _measure(ctx, "during_fault", one)
    assert "posted" not in one and "error" in one, f"the failed web chat still answered: {one}"


@when("the operators run dr/webchat_shanghai.yml")
def operators_switch_back(callcenter, ctx, timeline):
    run = _play(callcenter, timeline, "dr/webchat_shanghai.yml")
    _measure(ctx, "response", {"rc": run.rc, "changed": run.changed, "seconds": run.seconds})
    assert run.rc == 0, f"dr/webchat_shanghai.yml failed:\n{run.output[-4000:]}"


@then(parsers.parse("a customer following the entry is served by Shanghai's release {version} and the message is "
                    "stored in Shanghai"))
def served_by_shanghai(callcenter, ctx, version):
    sites = _sites(callcenter)
    one = wc.chat_once(callcenter.lab, _customer_host(callcenter), _website(callcenter),
                       f"dr-{int(time.time())}", "Shenzhen is down, is anyone there?")
    _measure(ctx, "after_response", one)
    assert one.get("posted", {}).get("site") == sites["shanghai"]["host"], one
    assert one["posted"]["version"] == version == sites["shanghai"]["version"], one
    assert (one.get("page") or {}).get("version") == version, one
    assert wc.uids(callcenter.lab, sites["shanghai"]["host"], [one["posted"]["uid"]]), "not stored in Shanghai"
    assert wc.schema_version(callcenter.lab, sites["shanghai"]["host"]) == 1, "Shanghai's schema was changed"


@then("after the rollback customers following the website's entry are served by Shenzhen again")
def after_rollback(webchat_rollback):
    webchat_rollback.run()
