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
import urllib.error
import urllib.parse
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


# Credyt's own price and entitlement form, as the SDK sends it.
CREDYT_PRICES = [{
    "name": "Chat completions", "type": "usage_based", "billing_model": {"type": "real_time"},
    "usage_calculation": {"event_type": "completion", "usage_type": "unit_and_volume", "volume_field": "tokens",
                          "billable_dimensions": ["model"]},
    "pricing": [{"asset": "USD", "values": [
        {"name": "GPT", "dimensions": {"model": "gpt"}, "values": [{"unit_price": 0.5, "volume_rate": 0.01, "package_size": 100}]},
        {"dimensions": {"model": "*"}, "values": [{"unit_price": 0.1, "volume_rate": 0}]}]}],
}]
CREDYT_ENTITLEMENTS = [{"name": "Monthly credit", "asset": "USD", "amount": 3.0, "purpose": "bundled",
                        "lifecycle": {"duration": "month", "refresh": {"strategy": "expire_and_replace"}}}]


def catalog(c, live):
    """Products and versions, subscriptions, assets and rates, vendors and stats."""
    a, _, live, _ = tenant(c, "Catalog")
    api = client(live)
    made = api.products.create({"name": "Assistant", "code": "assistant", "prices": CREDYT_PRICES,
                                "entitlements": CREDYT_ENTITLEMENTS})
    assert (made.code, made.version, made.status, made.is_default) == ("assistant", 1, "published", True), made
    got = api.products.get(made.id)
    assert got.default_version.version == 1 and got.default_version.prices[0]["name"] == "Chat completions", got
    assert [(v.version, v.status) for v in got.versions] == [(1, "published")], got
    assert api.products.get("assistant").id == made.id  # by code too
    listed = api.products.list(code="assistant")
    assert [p.id for p in listed.items_property] == [made.id] and listed.total_count == 1, listed
    # Invalid prices are 422 naming the field; a taken code is 409.
    bad = [dict(CREDYT_PRICES[0], billing_model={"type": "recurring"})]
    status, response = status_of(lambda: api.products.create({"name": "X", "code": "x", "prices": bad}))
    assert status == 422 and "billing_model" in response.text(), (status, response.text())
    assert status_of(lambda: api.products.create({"name": "Again", "code": "assistant", "prices": CREDYT_PRICES}))[0] == 409
    # A draft version: not the default until published and made so.
    cheaper = [dict(CREDYT_PRICES[0], pricing=[{"asset": "USD", "values": [{"unit_price": 0.05, "volume_rate": 0}]}])]
    v2 = api.products.create_version(made.id, {"prices": cheaper, "entitlements": CREDYT_ENTITLEMENTS, "publish": False})
    assert (v2.version, v2.status, v2.is_default) == (2, "draft", False), v2
    # (the SDK serialises versions as numbers; the path takes "default" too)
    default_version = lambda: json.loads(raw("GET", f"/products/{made.id}/default", live)[2])["version"]
    assert default_version() == 1
    api.products.update_version(made.id, 2, {"publish": True, "make_default": True})
    assert (api.products.get_version(made.id, 2).status, default_version()) == ("published", 2)
    assert status_of(lambda: api.products.update_version(made.id, 2, {"publish": False}))[0] == 409
    # Simulated fees of version 1, writing nothing.
    sim = api.products.simulate_usage(made.id, 1, {"events": [
        {"id": "s1", "event_type": "completion", "occurred_at": now(), "data": {"model": "gpt", "tokens": 200}},
        {"id": "s2", "event_type": "other", "occurred_at": now()}]})
    # (the SDK types these amounts as int; the server sends exact decimals: read them raw)
    assert [(f["usage_id"], f["amount"], f["price_name"]) for f in sim.as_dict()["fees"]] == [("s1", 0.52, "Chat completions")], sim
    assert len(sim.warnings) == 1 and "s2" in sim.warnings[0], sim
    status, response = status_of(lambda: api.products.simulate_usage(made.id, 1, {"events": [
        {"id": "s3", "event_type": "completion", "occurred_at": now(), "data": {"model": "gpt"}}]}))
    assert status == 422 and "data.tokens is missing" in response.text(), status

    # Subscriptions: on version 1 explicitly, moved to the default, deactivated.
    cust = api.customers.create({"name": "Cat", "external_id": f"cat-{RUN}"}).id
    sub = api.customers.create_subscription(cust, {"products": [{"id": made.id, "version": 1}]})
    assert (sub.status, sub.products[0].version) == ("active", 1), sub
    assert str(available(c, cust)) == "3", available(c, cust)  # the entitlement
    subs = api.products.get_subscribers(made.id)
    assert [(x.customer_id, x.subscription_id, x.version) for x in subs.items_property] == [(cust, sub.id, 1)], subs
    api.events.send_usage({"customer_id": cust, "events": [
        {"id": f"cat-{RUN}-1", "event_type": "completion", "occurred_at": now(), "data": {"model": "gpt", "tokens": 100},
         "costs": [{"id": "c1", "vendor_external_id": f"llm-{RUN}", "amount": 0.2, "category": "inference"}]}]})
    assert str(available(c, cust)) == "2.49", available(c, cust)
    api.customers.update_subscription_product(cust, sub.id, made.id, {"version": "default"})
    assert api.customers.get(cust).subscriptions[0].products[0].version == 2
    api.events.send_usage({"customer_id": cust, "events": [
        {"id": f"cat-{RUN}-2", "event_type": "completion", "occurred_at": now(), "data": {"model": "gpt", "tokens": 100}}]})
    assert str(available(c, cust)) == "5.44", available(c, cust)  # v2's entitlement, then 0.05
    assert status_of(lambda: api.customers.update_subscription_product(cust, sub.id, "nope", {"version": 1}))[0] == 404
    # Archiving: v1 (no subscriber is on it any more) closes it; the default cannot go.
    api.products.archive_version(made.id, 1)
    assert status_of(lambda: api.products.archive_version(made.id, 2))[0] == 409
    assert status_of(lambda: api.customers.create_subscription(cust, {"products": [{"id": made.id, "version": 1}]}))[0] == 409
    api.customers.update_subscription(cust, sub.id, {"status": "inactive"})
    assert api.customers.get(cust).subscriptions[0].status == "inactive"
    assert status_of(lambda: api.customers.update_subscription(cust, sub.id, {"status": "active"}))[0] == 409
    assert status_of(lambda: api.customers.update_subscription(cust, "sub_nope", {"status": "inactive"}))[0] == 404

    # Customer stats: revenue, costs and margin this month, in USD.
    one = api.customers.get_stats(cust).as_dict()
    assert [one[k] for k in ["gross_revenue", "total_costs", "net_revenue", "margin", "currency"]] == [0.56, 0.2, 0.36, 64.29, "USD"], one
    page = api.customers.list_stats(limit=10)
    assert page.total_count == 1 and page.items_property[0].id == cust and page.as_dict()["summary"]["gross_revenue"] == 0.56, page
    assert raw("GET", "/customers/stats?period_from=2020-01-01&period_to=2020-01-31", live)[0] == 200
    assert raw("GET", "/customers/stats?period_from=yesterday", live)[0] == 422

    # Vendors: created, listed, their costs by category.
    vops = api.vendors.vendors_ops
    vendor = vops.create_vendor({"name": "LLM Co", "external_id": f"llm-{RUN}"})
    assert vendor.id.startswith("ven_"), vendor
    assert status_of(lambda: vops.create_vendor({"name": "Dup", "external_id": f"llm-{RUN}"}))[0] == 409
    assert [v.id for v in vops.list_vendors(external_id=f"llm-{RUN}").items_property] == [vendor.id]
    assert vops.get_vendor(vendor.id).name == "LLM Co"
    stats = vops.get_vendor_stats(vendor.id).as_dict()
    assert stats == {"total_costs": 0.2, "categories": [{"category": "inference", "cost": 0.2}]}, stats
    assert vops.get_vendor_stats(vendor.id, category="storage").as_dict() == {"total_costs": 0, "categories": []}

    # Assets: a custom unit with a starting rate, a later rate, quotes then and now.
    made_asset = api.assets.create({"code": "credits", "name": "Credits", "precision": 0, "symbol": "C",
                                    "rates": [{"source": "USD", "inverse_rate": 100}]})
    assert made_asset.code == "credits", made_asset
    assert [x.code for x in api.assets.list().items_property] == ["credits"]
    q = api.assets.quote("credits", {"source": "USD", "amount": 5})
    assert (str(q.destination_amount), str(q.rate), str(q.inverse_rate)) == ("500", "0.01", "100"), q
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api.assets.add_rate("credits", {"source": "USD", "rate": 0.02, "valid_from": later})
    then = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert str(api.assets.quote("credits", {"source": "USD", "amount": 5, "exchange_at": then}).destination_amount) == "250"
    asset = api.assets.get("credits")
    schedule = [(str(r.rate), r.valid_to is None) for r in asset.rates[0].schedule]
    assert (asset.symbol, asset.rates[0].source, schedule) == ("C", "USD", [("0.01", False), ("0.02", True)]), asset
    assert status_of(lambda: api.assets.add_rate("credits", {"source": "USD", "rate": 0.03, "valid_from": later}))[0] == 409
    assert status_of(lambda: api.assets.quote("credits", {"source": "EUR", "amount": 5}))[0] == 404
    assert status_of(lambda: api.assets.get("nope"))[0] == 404

    # Deleting the product archives it: gone from the API, its subscribers' history kept.
    api.products.delete(made.id)
    assert status_of(lambda: api.products.get(made.id))[0] == 404
    assert [p.code for p in api.products.list().items_property] == ["chat"]  # (the tenant's own)
    # Another tenant reaches none of it.
    other = client(STATE["b_live"])
    for f in [lambda: other.products.get(made.id), lambda: other.assets.get("credits"),
              lambda: other.vendors.vendors_ops.get_vendor(vendor.id), lambda: other.customers.get_stats(cust),
              lambda: other.products.get_subscribers(made.id),
              lambda: other.customers.update_subscription(cust, sub.id, {"status": "inactive"})]:
        assert status_of(f)[0] == 404
    assert other.vendors.vendors_ops.list_vendors().total_count == 0
    assert other.customers.list_stats().total_count == 0
    problems = c.execute("SELECT count(*) FROM credyt.verify_ledger()").fetchone()[0]
    assert problems == 0, problems


def isolation(c, a, cust, live, test):
    b, _, b_live, _ = tenant(c, "Other")
    STATE["b_live"] = b_live
    STATE["b_account"] = b
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


def sweep(c, a, cust, live, b_live):
    """Every operation of the document, with A's real ids in its path and its example
    body: with B's key, 403 or 404 and never one of A's ids; with B's key and A named in
    X-CREDYT-ACCOUNT, 403 everywhere. A's data is unchanged after."""
    api = client(live)
    ids = {
        "customerId": cust,
        "subscriptionId": api.customers.get(cust).subscriptions[0].id,
        "productId": api.products.list().items_property[0].id,
        "version": "1",
        "transactionId": f"top-{RUN}",
        "eventId": f"ev-{RUN}-0",
        "webhookId": api.webhooks.webhooks.create_webhook_destination({"url": "http://127.0.0.1:9/a", "connect": True}).id,
        "topic": "webhook.test",
        "connectedAccountId": api.accounts.list().items_property[0].id,
        "vendorId": api.vendors.vendors_ops.create_vendor({"name": "A vendor", "external_id": f"av-{RUN}"}).id,
        "assetCode": api.assets.create({"code": "acredits", "name": "A credits", "rates": [{"source": "USD", "rate": 0.5}]}).code,
        "topUpId": c.execute("SELECT set_config('credyt.account', %s, false), credyt.initiate_topup(%s, 5)",
                             (a, cust)).fetchone()[1],
    }
    c.execute("RESET credyt.account")
    secret = [v for k, v in ids.items() if k not in ("version", "topic")] + [a]
    doc = json.loads(raw("GET", "/openapi.json")[2])
    schemas = doc["components"]["schemas"]

    def example(op):
        ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
        return schemas[ref.split("/")[-1]].get("example", {}) if ref else ({} if "requestBody" in op else None)

    def snapshot():
        return (available(c, cust), c.execute(
            "SELECT (SELECT count(*) FROM credyt.customer WHERE account_id = %s) || '/' || "
            "(SELECT count(*) FROM credyt.usage_event WHERE account_id = %s) || '/' || "
            "(SELECT count(*) FROM credyt.product_version WHERE account_id = %s AND status = 'published') || '/' || "
            "(SELECT count(*) FROM credyt.webhook WHERE account_id = %s AND deleted_at IS NULL) || '/' || "
            "(SELECT count(*) FROM credyt.subscription WHERE account_id = %s AND ends_at IS NULL)", (a,) * 5).fetchone()[0])

    before = snapshot()
    tried = 0
    for path, item in doc["paths"].items():
        if path == "/stripe/webhook":
            continue  # (no key: Stripe's signature, which tests/server/sdk_test.py's top_ups proves)
        for method, op in item.items():
            params = [x for x in op.get("parameters", []) if x["in"] == "path"]
            url = path
            for x in params:
                value = ids["connectedAccountId"] if (x["name"] == "accountId" and path.startswith("/accounts")) else \
                    ("default:USD" if x["name"] == "accountId" else ids[x["name"]])
                url = url.replace("{" + x["name"] + "}", urllib.parse.quote(value, safe=""))
            body = example(op)
            # (an id the request itself carries may be echoed in the error; any other is a leak)
            sent = urllib.parse.unquote(url) + json.dumps(body)
            status, _, text = raw(method.upper(), url, b_live, body)
            leaked = [v for v in secret if v.encode() in text and v not in sent]
            assert not leaked and status < 500, (method, url, status, text[:300])
            if any(x["name"] != "topic" for x in params):  # the path names one of A's things
                assert status in (403, 404), (method, url, status, text[:300])
            status, _, text = raw(method.upper(), url, b_live, body, headers={"X-CREDYT-ACCOUNT": a})
            leaked = [v for v in secret if v.encode() in text and v not in sent + a]
            assert status == 403 and not leaked, (method, url, status, text[:300])
            tried += 1
    assert tried >= 45, tried
    after = snapshot()
    assert before == after, (before, after)
    api.webhooks.webhooks.delete_webhook_destination(ids["webhookId"])


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


class Receiver:
    """A local webhook receiver: /ok answers 200, anything else 500; keeps what came."""

    def __init__(self):
        import http.server
        import threading
        got = self.got = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                got.append((self.path, json.loads(body)))
                self.send_response(200 if self.path == "/ok" else 500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, pred, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [b for p, b in self.got if pred(p, b)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"nothing arrived; got {self.got}")


def deliveries(c, live):
    """Connected-account test events reach the platform's endpoints through a real
    worker; the delivery log pages through them and filters them."""
    import subprocess
    a, _, live, _ = tenant(c, "Hooks")
    api = client(live)
    hooks = api.webhooks.webhooks
    rx = Receiver()
    ok = hooks.create_webhook_destination({"url": rx.url + "/ok", "connect": True})
    down = hooks.create_webhook_destination({"url": rx.url + "/down"})
    own = hooks.create_webhook_destination({"url": rx.url + "/ok", "topics": ["grant.*"]})
    sub = api.accounts.create({"name": "Hooks EU", "external_id": f"heu-{RUN}"})
    worker = subprocess.Popen([os.environ["CREDYT_WORKER_BIN"], "--database-url", DSN, "--retry-schedule", "100ms",
                               "--timeout", "2s", "--lease", "5s", "--metrics-addr", "off", "--poll-interval", "100ms"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # To one endpoint, as from the connected account: the envelope says so.
        e1 = hooks.test_connected_webhook_destination(ok.id, "webhook.test", sub.id, {})
        got = rx.wait(lambda p, b: b["id"] == e1.id)
        assert got[0]["account"] == sub.id and got[0]["data"]["test"] is True, got
        # An endpoint without connect does not take connected accounts' events.
        assert raw("POST", f"/webhooks/{own.id}/test/grant.issued/{sub.id}", live, {})[0] == 409
        # To every endpoint that receives the connected account's events.
        e2 = hooks.test_connected_webhook_destinations("grant.issued", sub.id, {})
        rx.wait(lambda p, b: b["id"] == e2.id)
        # A plain test event goes to the account's plain endpoints that take its topic:
        # the failing one (connect endpoints take only connected accounts' events).
        e3 = hooks.test_webhook_destinations("webhook.test", {})
        deadline = time.monotonic() + 20
        while c.execute("SELECT status FROM credyt.delivery WHERE event_id = %s AND webhook_id = %s",
                        (e3.id, down.id)).fetchone()[0] != "failed":
            assert time.monotonic() < deadline, "the failing endpoint never failed"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(10)
    # Another tenant's (or an unknown) account is out of reach; so is another's endpoint.
    b = STATE["b_account"]
    for path in [f"/webhooks/{ok.id}/test/webhook.test/{b}", f"/webhooks/test/webhook.test/{b}",
                 f"/webhooks/test/webhook.test/acc_nope"]:
        status = raw("POST", path, live, {})[0]
        assert status in (403, 404), (path, status)
    assert raw("POST", f"/webhooks/{ok.id}/test/webhook.test/{sub.id}", STATE["b_live"], {})[0] == 404

    # The delivery log: newest first, a page at a time, both ways.
    log = hooks.list_events(limit=100)
    mine = [(m.id, m.destination_id) for m in log.models]
    assert (e3.id, down.id) in mine and (e1.id, ok.id) in mine and (e2.id, ok.id) in mine, mine
    assert log.pagination.next is None and log.pagination.prev is None, log.pagination
    first = hooks.list_events(limit=2)
    assert [(m.id, m.destination_id) for m in first.models] == mine[:2] and first.pagination.prev is None, first
    second = hooks.list_events(limit=2, next=first.pagination.next)
    assert [(m.id, m.destination_id) for m in second.models] == mine[2:4], (second, mine)
    back = hooks.list_events(limit=2, prev=second.pagination.prev)
    assert [(m.id, m.destination_id) for m in back.models] == mine[:2], back
    failed = hooks.list_events(status="Failed")
    assert [(m.id, m.destination_id) for m in failed.models] == [(e3.id, down.id)], failed
    assert failed.models[0].failed_at is not None and failed.models[0].successful_at is None
    delivered = hooks.list_events(status="Success", destination_id=ok.id)
    assert {m.id for m in delivered.models} == {e1.id, e2.id}, delivered
    assert not [b for p, b in rx.got if b["id"] == e3.id and p == "/ok"], rx.got
    connected = [m for m in delivered.models if m.id == e1.id][0]
    assert connected.metadata["account_id"] == sub.id and connected.topic == "webhook.test", connected
    assert hooks.list_events(time_gte="2000-01-01T00:00:00Z", time_lte="2000-01-02T00:00:00Z").models == []
    assert raw("GET", "/webhooks/events?next=garbage", live)[0] == 422
    assert raw("GET", "/webhooks/events?status=Pending", live)[0] == 422
    theirs = client(STATE["b_live"]).webhooks.webhooks.list_events(limit=100).models
    assert not {m.destination_id for m in theirs} & {ok.id, down.id}, theirs


def post_text(path, text, headers):
    """POST a body exactly as given (a signed Stripe event): (status, body)."""
    req = urllib.request.Request(URL + path, method="POST", data=text.encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def top_ups(c):
    """Checkout top-ups through Stripe (localstripe behind the test's wrapper, see
    fake_stripe.py), completed by Stripe webhooks signed with the official library."""
    import stripe as stripe_lib
    from fake_stripe import FakeStripe, event

    fake = FakeStripe(os.path.join(os.path.dirname(sys.executable), "localstripe"), int(os.environ["CREDYT_TEST_STRIPE_PORT"]))
    try:
        a, _, live, _ = tenant(c, "Payments")
        secret, key = "whsec_" + uuid.uuid4().hex, "sk_test_" + uuid.uuid4().hex
        c.execute("SELECT set_config('credyt.account', %s, false)", (a,))
        c.execute("SELECT credyt.connect_stripe(%s, %s)", (key, secret))
        c.execute("SELECT credyt.create_asset('credits', 'Credits', 0, rate => 0.01)")
        cust = c.execute("SELECT credyt.create_customer('Pat', %s)", (f"pat-{RUN}",)).fetchone()[0]
        c.execute("RESET credyt.account")
        api = client(live)
        urls = {"return_url": "https://app.example.com/ok", "failure_url": "https://app.example.com/ko"}
        # The first attempt meets a 500: the server retries with the same Idempotency-Key.
        fake.faults["/v1/checkout/sessions"] = 1
        made = api.top_ups.initiate({"customer_id": cust, "amount": 20.0, "currency": "USD",
                                     "destination": {"asset": "credits"}, **urls})
        assert made.status == "pending" and made.redirect_url.startswith(fake.url + "/pay/cs_test_"), made
        calls = [r for r in fake.requests if r[1] == "/v1/checkout/sessions"]
        assert [r[2] for r in calls] == [f"credyt-{made.id}-checkout"] * 2 and len(fake.sessions) == 1, calls
        sid = made.redirect_url.rsplit("/", 1)[1]
        s = fake.sessions[sid]
        assert (s["amount_total"], s["currency"], s["metadata"]["credyt_topup"], s["setup_future_usage"]) == \
            (2000, "usd", made.id, "off_session"), s
        got = api.top_ups.get(made.id)
        assert (got.status, got.currency, got.destination.asset) == ("pending", "USD", "credits"), got

        def deliver(payload, sig):
            status, body = post_text("/stripe/webhook", payload, {"Stripe-Signature": sig, "Content-Type": "application/json"})
            return status, (json.loads(body).get("outcome") if status == 200 else body)

        # Paid with a card: the signed event credits 2,000 credits as a paid lot, once.
        kind, obj = fake.pay(sid, key)
        payload = event(kind, obj)
        sig = stripe_lib.WebhookSignature.generate_signature_header(payload, secret)
        assert deliver(payload.replace('"paid"', '"PAID"'), sig)[0] == 400  # tampered
        stale = stripe_lib.WebhookSignature.generate_signature_header(payload, secret, int(time.time()) - 600)
        assert deliver(payload, stale)[0] == 400
        assert deliver(payload, stripe_lib.WebhookSignature.generate_signature_header(payload, "whsec_other"))[0] == 400
        assert api.top_ups.get(made.id).status == "pending"
        assert deliver(payload, sig) == (200, "succeeded")
        assert deliver(payload, sig) == (200, "duplicate")
        c.execute("SELECT set_config('credyt.account', %s, false)", (a,))
        lots = c.execute("SELECT purpose, amount::text, expires_at > now() + interval '364 days' FROM credyt.lots "
                         "WHERE customer_id = %s", (cust,)).fetchall()
        assert lots == [("paid", "2000", True)], lots
        assert c.execute("SELECT stripe_customer IS NOT NULL FROM credyt.stripe_customer WHERE customer_id = %s",
                         (cust,)).fetchone() == (True,)
        c.execute("RESET credyt.account")
        assert api.top_ups.get(made.id).status == "succeeded"
        # A declined card: failed, nothing credited; an abandoned session: expired.
        second = api.top_ups.initiate({"customer_id": cust, "amount": 5.0, "currency": "USD", **urls})
        kind, obj = fake.pay(second.redirect_url.rsplit("/", 1)[1], key, card="pm_card_chargeCustomerFail")
        assert kind == "payment_intent.payment_failed", kind
        payload = event(kind, obj)
        assert deliver(payload, stripe_lib.WebhookSignature.generate_signature_header(payload, secret)) == (200, "failed")
        assert api.top_ups.get(second.id).status == "failed"
        third = api.top_ups.initiate({"customer_id": cust, "amount": 5.0, "currency": "USD", **urls})
        payload = event(*fake.expire(third.redirect_url.rsplit("/", 1)[1]))
        assert deliver(payload, stripe_lib.WebhookSignature.generate_signature_header(payload, secret)) == (200, "expired")
        assert str(available(c, cust)) == "0", available(c, cust)  # (USD: the credits are another asset)
        # Auto top-up for real: the card saved by the checkout is charged off-session once.
        auto_topups(c, a, cust, key, fake)
        # Events that are not credyt's are acknowledged and ignored.
        other = event("customer.created", {"id": "cus_x"})
        assert deliver(other, stripe_lib.WebhookSignature.generate_signature_header(other, secret)) == (200, "ignored")
        # Bad input: 422 before Stripe is called; another tenant: no Stripe connection (409), A's top-up unknown (404).
        before = len(fake.requests)
        assert status_of(lambda: api.top_ups.initiate({"customer_id": cust, "amount": 0.015, "currency": "USD", **urls}))[0] == 422
        assert status_of(lambda: api.top_ups.initiate({"customer_id": "cust_nope", "amount": 5.0, "currency": "USD", **urls}))[0] == 404
        assert len(fake.requests) == before
        b = client(STATE["b_live"])
        b_cust = b.customers.create({"name": "Bea"}).id
        assert status_of(lambda: b.top_ups.initiate({"customer_id": b_cust, "amount": 5.0, "currency": "USD", **urls}))[0] == 409
        assert status_of(lambda: b.top_ups.get(made.id))[0] == 404
    finally:
        fake.close()


def auto_topups(c, a, cust, key, fake):
    """Below the threshold: one off-session PaymentIntent (the top-up id its
    Idempotency-Key), one paid lot, one auto_topup.succeeded; with a card that declines,
    one auto_topup.failed and nothing credited."""

    def wait_status(topup, want):
        deadline = time.monotonic() + 20
        while c.execute("SELECT status FROM credyt.topup WHERE id = %s", (topup,)).fetchone()[0] != want:
            assert time.monotonic() < deadline, (topup, want, fake.requests[-5:])
            time.sleep(0.1)

    c.execute("SELECT set_config('credyt.account', %s, false)", (a,))
    c.execute("SELECT credyt.set_auto_topup(%s, 'USD', 10, 25)", (cust,))  # at 0: requested at once
    top = c.execute("SELECT id FROM credyt.topups WHERE customer_id = %s AND kind = 'auto'", (cust,)).fetchone()[0]
    c.execute("RESET credyt.account")
    wait_status(top, "succeeded")
    charges = [r for r in fake.requests if r[1] == "/v1/payment_intents" and r[2] == top]
    assert len(charges) == 1, charges
    c.execute("SELECT set_config('credyt.account', %s, false)", (a,))
    assert str(c.execute("SELECT credyt.balance(%s)", (cust,)).fetchone()[0]) == "25"
    # (the admin is a superuser, whom row-level security does not confine: filter by account)
    events = c.execute("SELECT event_type, count(*) FROM credyt.events WHERE event_type LIKE 'auto_topup.%%' "
                       "AND account_id = %s GROUP BY 1 ORDER BY 1", (a,)).fetchall()
    assert events == [("auto_topup.requested", 1), ("auto_topup.succeeded", 1)], events
    # Another customer whose saved card declines off-session.
    bad = c.execute("SELECT credyt.create_customer('Dee', %s)", (f"dee-{RUN}",)).fetchone()[0]
    c.execute("RESET credyt.account")
    stripe_cust = fake.localstripe("POST", "/v1/customers", key, {"email": "dee@example.com"})["id"]
    fake.localstripe("POST", "/v1/payment_methods/pm_card_chargeCustomerFail/attach", key, {"customer": stripe_cust})
    c.execute("INSERT INTO credyt.stripe_customer (account_id, customer_id, stripe_customer, payment_method) "
              "VALUES (%s, %s, %s, 'pm_card_chargeCustomerFail')", (a, bad, stripe_cust))
    c.execute("SELECT set_config('credyt.account', %s, false)", (a,))
    c.execute("SELECT credyt.set_auto_topup(%s, 'USD', 10, 25)", (bad,))
    declined = c.execute("SELECT id FROM credyt.topups WHERE customer_id = %s AND kind = 'auto'", (bad,)).fetchone()[0]
    c.execute("RESET credyt.account")
    wait_status(declined, "failed")
    c.execute("SELECT set_config('credyt.account', %s, false)", (a,))
    assert str(c.execute("SELECT credyt.balance(%s)", (bad,)).fetchone()[0]) == "0"
    failed = c.execute("SELECT count(*) FROM credyt.events WHERE event_type = 'auto_topup.failed' "
                       "AND payload::jsonb #>> '{data,topup_id}' = %s", (declined,)).fetchone()[0]
    assert failed == 1, failed
    assert [r for r in fake.requests if r[1] == "/v1/payment_intents" and r[2] == declined], fake.requests[-5:]
    c.execute("RESET credyt.account")
    problems = c.execute("SELECT count(*) FROM credyt.verify_ledger()").fetchone()[0]
    assert problems == 0, problems


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
    body = {"customer_id": "cust_x", "return_url": "https://a.example", "failure_url": "https://b.example"}
    assert raw("POST", "/billing-portal/sessions", "x", body)[0] == 401


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
        check("catalog_subscriptions_assets_vendors_stats", lambda: catalog(c, live))
        check("webhook_deliveries_connected_tests_and_log", lambda: deliveries(c, live))
        check("stripe_checkout_top_ups", lambda: top_ups(c))
        # (last: B's key creates things in B with the examples)
        check("every_route_cross_tenant", lambda: sweep(c, a, cust, live, STATE["b_live"]))
    check("openapi_document_and_observability", document)
    failed = sum(1 for _, ok in results if not ok) + (0 if "i" in state else 7)
    passed = sum(1 for _, ok in results if ok)
    print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed; 0 ignored")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
