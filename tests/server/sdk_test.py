"""credyt-server driven by the official Credyt SDK (credyt-api on PyPI), end to end.

Run by scripts/test.sh with a server already listening:
  CREDYT_TEST_DATABASE_URL  libpq connection string of the test database (superuser)
  CREDYT_SERVER_URL         the server, e.g. http://127.0.0.1:18080
Prints one cargo-style "test result:" line per check group (scripts/test.sh sums them).
"""

import concurrent.futures
import datetime
import json
import os
import sys
import time
import traceback
import urllib.request
import uuid
from decimal import Decimal

import psycopg
from corehttp.credentials import ServiceKeyCredential
from corehttp.exceptions import HttpResponseError
from credytapi import CredytApiClient

DSN = os.environ["CREDYT_TEST_DATABASE_URL"]
URL = os.environ["CREDYT_SERVER_URL"]
RUN = uuid.uuid4().hex[:8]
STATE = {}
PRICES = json.dumps([{
    "type": "usage_based",
    "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
    "pricing": [{"asset": "USD", "values": [{"unit_price": 0.25}]}],
}])


def now():
    """An occurred_at after the subscriptions' start, as the SDK sends it (six digits)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def admin():
    return psycopg.connect(DSN, autocommit=True)


def tenant(c, name):
    """A connected account with a product, and its live and test keys."""
    account = c.execute("SELECT credyt.create_account(%s)", (f"{name} {RUN}",)).fetchone()[0]
    c.execute("SELECT set_config('credyt.account', %s, false)", (account,))
    product = c.execute("SELECT credyt.create_product('chat', 'Chat', %s)", (PRICES,)).fetchone()[0]
    live = c.execute("SELECT credyt.create_api_key('sdk live', 'live')").fetchone()[0]
    test = c.execute("SELECT credyt.create_api_key('sdk test', 'test')").fetchone()[0]
    c.execute("RESET credyt.account")
    return account, product, live, test


def client(key):
    return CredytApiClient(ServiceKeyCredential(key), endpoint=URL)


def status_of(f):
    """The HTTP status an SDK call raised with (None when it succeeded)."""
    try:
        f()
    except HttpResponseError as e:
        return e.status_code, e.response
    return None, None


def raw(method, path, key=None, body=None, headers=None):
    """A request without the SDK (no redirects followed): (status, headers, body)."""
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["X-CREDYT-API-KEY"] = key
    req = urllib.request.Request(URL + path, method=method, headers=h,
                                 data=None if body is None else json.dumps(body).encode())

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def available(c, customer):
    c.execute("SELECT set_config('credyt.account', (SELECT account_id FROM credyt.customer WHERE id = %s), false)", (customer,))
    v = c.execute("SELECT credyt.balance(%s)", (customer,)).fetchone()[0]
    c.execute("RESET credyt.account")
    return v


def integration(c):
    a, product, live, test = tenant(c, "SDK")
    api = client(live)
    ctx = api.accounts.get_context()
    assert (ctx.account_id, ctx.environment) == (a, "live"), ctx
    sub = api.accounts.create({"name": "SDK EU", "external_id": f"eu-{RUN}", "metadata": {"region": "eu"}})
    assert sub.id.startswith("acc_"), sub
    assert api.accounts.get(sub.id).metadata == {"region": "eu"}
    assert [x.id for x in api.accounts.list().items_property] == [sub.id]

    created = api.customers.create({"name": "Ann", "external_id": f"ann-{RUN}", "email": "ann@example.com",
                                    "subscriptions": [{"products": [{"id": product}]}]})
    cust = created.id
    assert len(created.subscriptions) == 1 and created.subscriptions[0].status == "active", created
    got = api.customers.get(cust)
    assert (got.name, got.email, got.active_subscription_count) == ("Ann", "ann@example.com", 1), got
    api.customers.update(cust, {"name": "Ann B."})
    assert api.customers.get(cust).name == "Ann B."
    page = api.customers.list(limit=10)
    assert (page.total_count, [x.id for x in page.items_property]) == (1, [cust]), page
    # The external-id lookup answers 303 to the customer (the SDK does not follow it), or 404.
    status, response = status_of(lambda: api.customers.list(external_id=f"ann-{RUN}"))
    assert status == 303 and response.headers["Location"] == f"/customers/{cust}", status
    assert status_of(lambda: api.customers.list(external_id="nobody"))[0] == 404
    # Products by code, at the default version; a bad version is 422 and writes nothing.
    bob = api.customers.create({"name": "Bob", "subscriptions": [{"products": [{"code": "chat", "version": "default"}]}]})
    assert [p.code for p in bob.subscriptions[0].products] == ["chat"], bob
    eve = {"name": "Eve", "external_id": f"eve-{RUN}", "subscriptions": [{"products": [{"code": "chat", "version": "latest"}]}]}
    status, response = status_of(lambda: api.customers.create(eve))
    assert status == 422 and "subscriptions[0].products[0].version" in response.text(), status
    assert status_of(lambda: api.customers.list(external_id=f"eve-{RUN}"))[0] == 404

    # A top-up adjustment, replayed: one credit; the response id is the transaction_id.
    body = {"transaction_id": f"top-{RUN}", "asset": "USD", "amount": 20.0, "reason": "external_topup"}
    first = api.wallets.customer_wallet_ops.create_adjustment(cust, body)
    again = api.wallets.customer_wallet_ops.create_adjustment(cust, body)
    assert first.id == again.id == f"top-{RUN}" and first.created_at == again.created_at, (first, again)
    assert str(available(c, cust)) == "20", available(c, cust)
    changed = dict(body, amount=21.0)
    assert status_of(lambda: api.wallets.customer_wallet_ops.create_adjustment(cust, changed))[0] == 409

    # Usage events, replayed: charged once each; 204 both times.
    events = [{"id": f"ev-{RUN}-{i}", "event_type": "chat", "occurred_at": now(),
               "subject": "s1", "data": {"tokens": 3}} for i in range(4)]
    api.events.send_usage({"customer_id": cust, "events": events})
    api.events.send_usage({"customer_external_id": f"ann-{RUN}", "events": events})
    assert str(available(c, cust)) == "19", available(c, cust)
    wallet = api.wallets.customer_wallet_ops.get_customer_wallet(cust)
    assert [(x.id, str(x.available)) for x in wallet.accounts] == [("default:USD", "19")], wallet
    acct = api.wallets.customer_wallet_ops.get_account(cust, "default:USD")
    assert (str(acct.available), str(acct.pending_in)) == ("19", "0"), acct

    # The events, listed with filters and one with its fees.
    listed = api.events.list(customer_id=cust, limit=10)
    assert listed.total_count == 4 and all(x.has_fees for x in listed.items_property), listed
    assert api.events.list(customer_external_id=f"ann-{RUN}", event_types="chat,other").total_count == 4
    assert api.events.list(customer_id=cust, event_types="other").total_count == 0
    assert api.events.list(customer_id=cust, subject="nobody").total_count == 0
    event = api.events.get(events[0]["id"])
    assert event.customer_id == cust and event.subject == "s1", event
    # (the SDK reads data values as text; the server sends them as they were recorded)
    status, _, body = raw("GET", f"/events/{events[0]['id']}", live)
    assert status == 200 and json.loads(body)["data"] == {"tokens": 3}, body
    fees = [(f["product_code"], f["currency"], f["amount"], f["usage_type"]) for f in event.as_dict()["fees"]]
    assert fees == [("chat", "USD", 0.25, "unit")], fees
    assert status_of(lambda: api.events.get("no-such-event"))[0] == 404

    # A charge; the top-up's and the charge's transactions; the wallet's lots.
    ops = api.wallets.customer_wallet_ops
    ops.create_charge(cust, {"transaction_id": f"ch-{RUN}", "asset": "USD", "amount": 1.5, "description": "api call"})
    ops.create_charge(cust, {"transaction_id": f"ch-{RUN}", "asset": "USD", "amount": 1.5, "description": "api call"})
    assert str(available(c, cust)) == "17.5", available(c, cust)
    t = ops.get_transaction(cust, f"top-{RUN}").as_dict()
    assert (t["id"], t["type"], t["account_id"], t["amount"]) == (f"top-{RUN}", "adjustment", "default:USD", 20), t
    t = ops.get_transaction(cust, f"ch-{RUN}").as_dict()
    assert (t["type"], t["amount"], t["description"]) == ("fee", -1.5, "api call"), t
    assert status_of(lambda: ops.get_transaction(cust, "nope"))[0] == 404
    lots = ops.get_credit_grants(cust, "default:USD").as_dict()
    assert [(g["purpose"], g["available"]) for g in lots["items"]] == [("paid", 17.5)], lots
    assert ops.get_credit_grants(cust, "default:USD", purpose="promotion").total_count == 0
    return a, cust, live, test


def isolation(c, a, cust, live, test):
    b, _, b_live, _ = tenant(c, "Other")
    STATE["b_live"] = b_live
    other = client(b_live)
    # Another tenant's key: the customer does not exist for it; naming A is forbidden.
    assert status_of(lambda: other.customers.get(cust))[0] == 404
    assert status_of(lambda: other.wallets.customer_wallet_ops.get_customer_wallet(cust))[0] == 404
    adj = {"transaction_id": f"steal-{RUN}", "asset": "USD", "amount": -5.0, "reason": "external_refund"}
    assert status_of(lambda: other.wallets.customer_wallet_ops.create_adjustment(cust, adj))[0] == 404
    assert status_of(lambda: other.events.send_usage({"customer_id": cust, "events": [
        {"id": f"x-{RUN}", "event_type": "chat", "occurred_at": now()}]}))[0] == 404
    assert status_of(lambda: other.events.get(f"ev-{RUN}-0"))[0] == 404
    assert other.events.list(customer_id=cust).total_count == 0
    assert status_of(lambda: other.wallets.customer_wallet_ops.get_transaction(cust, f"top-{RUN}"))[0] == 404
    assert status_of(lambda: other.wallets.customer_wallet_ops.get_credit_grants(cust, "default:USD"))[0] == 404
    charge = {"transaction_id": f"steal-ch-{RUN}", "asset": "USD", "amount": 1.0}
    assert status_of(lambda: other.wallets.customer_wallet_ops.create_charge(cust, charge))[0] == 404
    for path in ["/accounts/self", f"/customers/{cust}", "/customers", f"/customers/{cust}/wallet", "/events",
                 f"/events/ev-{RUN}-0", f"/customers/{cust}/wallet/transactions/top-{RUN}",
                 f"/customers/{cust}/wallet/default:USD/grants"]:
        status, _, body = raw("GET", path, b_live, headers={"X-CREDYT-ACCOUNT": a})
        assert status == 403 and cust.encode() not in body, (path, status, body)
    # No key, a wrong key: 401 alike, saying nothing of which.
    for key in [None, "sk_live_" + "0" * 64, live[:-1] + ("0" if live[-1] != "0" else "1")]:
        status, headers, body = raw("GET", "/accounts/self", key)
        assert status == 401 and headers["Content-Type"] == "application/problem+json", (status, body)
    # The test environment is a tree of its own: the live customer is not in it.
    t = client(test)
    assert t.accounts.get_context().environment == "test"
    assert t.customers.list().total_count == 0
    assert status_of(lambda: t.customers.get(cust))[0] == 404
    assert str(available(c, cust)) == "17.5", available(c, cust)


def webhooks(c, a, live, b_live):
    """Endpoints: create, list, get with the secret, update, test events, delete."""
    hooks = client(live).webhooks.webhooks
    made = hooks.create_webhook_destination({"url": "http://127.0.0.1:9/hook", "topics": ["grant.*"]})
    assert made.id.startswith("whd_") and made.secret.startswith("whsec_"), made
    listed = hooks.list_webhook_destinations()
    assert [(x.id, x.topics, x.connect, x.enabled) for x in listed.items_property] == [(made.id, ["grant.*"], False, True)]
    assert "secret" not in listed.as_dict()["items"][0]
    got = hooks.get_webhook_destination(made.id)
    assert (got.secret, got.url) == (made.secret, "http://127.0.0.1:9/hook"), got
    status, _, body = raw("PATCH", f"/webhooks/{made.id}", live, {"topics": ["*"]})
    assert status == 200 and json.loads(body)["topics"] == ["*"], body
    event = hooks.test_webhook_destination(made.id, "webhook.test", {})
    n = c.execute("SELECT count(*) FROM credyt.delivery WHERE event_id = %s AND webhook_id = %s", (event.id, made.id)).fetchone()[0]
    assert n == 1, n
    everyone = hooks.test_webhook_destinations("grant.issued", {})
    assert everyone.id.startswith("whe_") and everyone.id != event.id
    bad = raw("POST", f"/webhooks/{made.id}/test/grant.*", live, {})
    assert bad[0] == 422, bad
    # Another tenant sees none of it.
    other = client(b_live).webhooks.webhooks
    assert status_of(lambda: other.get_webhook_destination(made.id))[0] == 404
    assert status_of(lambda: other.delete_webhook_destination(made.id))[0] == 404
    assert raw("PATCH", f"/webhooks/{made.id}", b_live, {"enabled": False})[0] == 404
    assert raw("POST", f"/webhooks/{made.id}/test/webhook.test", b_live, {})[0] == 404
    assert other.list_webhook_destinations().total_count == 0
    hooks.delete_webhook_destination(made.id)
    assert status_of(lambda: hooks.get_webhook_destination(made.id))[0] == 404
    assert hooks.list_webhook_destinations().total_count == 0


def concurrency(c, cust, live):
    """8 clients send overlapping batches: every event is charged exactly once."""
    before = available(c, cust)
    ids = [f"cc-{RUN}-{i}" for i in range(40)]
    at = now()  # one occurred_at: a replay repeats the event exactly

    def send(n):
        mine = ids[n * 3:n * 3 + 16]  # overlapping windows
        body = {"customer_id": cust, "events": [{"id": i, "event_type": "chat", "occurred_at": at}
                                                 for i in mine]}
        for _ in range(3):
            status, _, text = raw("POST", "/events", live, body)
            assert status == 204, (status, text)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(8)))
    sent = {i for n in range(8) for i in ids[n * 3:n * 3 + 16]}
    n = c.execute("SELECT count(*) FROM credyt.usage_event WHERE event_id = ANY(%s)", (list(sent),)).fetchone()[0]
    assert n == len(sent), n
    assert before - available(c, cust) == Decimal(len(sent)) * Decimal("0.25"), (before, available(c, cust))
    problems = c.execute("SELECT count(*) FROM credyt.verify_ledger()").fetchone()[0]
    assert problems == 0, problems


def document():
    """/openapi.json is a valid OpenAPI 3.1 document; responses carry a request id."""
    from openapi_spec_validator import validate

    status, headers, body = raw("GET", "/openapi.json")
    assert status == 200
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.1"), doc["openapi"]
    validate(doc)
    for path in ["/customers", "/events", "/accounts/self", "/customers/{customerId}/wallet/adjustments"]:
        assert path in doc["paths"], path
    assert headers.get("x-request-id", "").startswith("req_"), headers
    status, headers, _ = raw("GET", "/healthz", headers={"X-Request-Id": "mine-1"})
    assert status == 200 and headers["x-request-id"] == "mine-1"
    status, _, body = raw("GET", "/metrics")
    assert status == 200 and b'credyt_server_requests_total{method="GET",route="/customers/{customerId}"' in body, body[:300]
    assert raw("POST", "/top-ups", "x")[0] == 501


def main():
    c = admin()
    results = []
    state = {}

    def check(name, f):
        started = time.monotonic()
        try:
            f()
            results.append((name, True))
            print(f"test server::{name} ... ok ({time.monotonic() - started:.1f}s)")
        except Exception:
            results.append((name, False))
            print(f"test server::{name} ... FAILED")
            traceback.print_exc()

    check("sdk_integration", lambda: state.setdefault("i", integration(c)))
    if "i" in state:
        a, cust, live, test = state["i"]
        check("cross_tenant_and_environments", lambda: isolation(c, a, cust, live, test))
        check("concurrent_events_charge_once", lambda: concurrency(c, cust, live))
        check("webhook_endpoints", lambda: webhooks(c, a, live, STATE["b_live"]))
    check("openapi_document_and_observability", document)
    failed = sum(1 for _, ok in results if not ok) + (0 if "i" in state else 3)
    passed = sum(1 for _, ok in results if ok)
    print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed; 0 ignored")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
