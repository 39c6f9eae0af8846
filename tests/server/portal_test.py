"""The billing portal, in headless Chromium (Debian's package, driven by Playwright),
against a running credyt-server, with Stripe faked as in sdk_test.py.

Run by scripts/test.sh after sdk_test.py:
  CREDYT_TEST_DATABASE_URL    libpq connection string of the test database (superuser)
  CREDYT_SERVER_URL           the server
  CREDYT_TEST_STRIPE_PORT     where the server expects Stripe (fake_stripe.py listens there)
  CREDYT_PORTAL_SIGNING_KEY   the server's portal key (to mint an expired link)
  CREDYT_SERVER_LOG           the server's log file (secrets must never be in it)
  CREDYT_SCREENSHOT_DIR       where to save the screenshots (default: a temporary directory)
Prints cargo-style "test result:" lines.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid

import psycopg
from corehttp.credentials import ServiceKeyCredential
from credytapi import CredytApiClient

DSN = os.environ["CREDYT_TEST_DATABASE_URL"]
URL = os.environ["CREDYT_SERVER_URL"]
RUN = uuid.uuid4().hex[:8]
SHOTS = os.environ.get("CREDYT_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="credyt-portal-")
PRICES = json.dumps([{"name": "Chat", "type": "usage_based",
                      "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                      "pricing": [{"asset": "USD", "values": [{"unit_price": 0.25}]}]}])


def admin():
    return psycopg.connect(DSN, autocommit=True)


def scoped(c, account, sql, *args):
    c.execute("SELECT set_config('credyt.account', %s, false)", (account,))
    try:
        return c.execute(sql, args).fetchone()
    finally:
        c.execute("RESET credyt.account")


def get(path, cookie=None, follow=False, bearer=None):
    """(status, headers, body) of a GET; redirects not followed unless asked."""
    h = {"Cookie": cookie} if cookie else {}
    if bearer:
        h["Authorization"] = "Bearer " + bearer
    req = urllib.request.Request(URL + path, headers=h)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims):
    """An HS256 JWT signed with the server's portal key (what only the server can do)."""
    key = os.environ["CREDYT_PORTAL_SIGNING_KEY"].encode()
    head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def setup(c):
    """A tenant with a funded customer subscribed to a product, Stripe connected."""
    account = c.execute("SELECT credyt.create_account(%s)", (f"Portal {RUN}",)).fetchone()[0]
    key = scoped(c, account, "SELECT credyt.create_api_key('portal', 'live')")[0]
    stripe_key, whsec = "sk_test_" + uuid.uuid4().hex, "whsec_" + uuid.uuid4().hex
    scoped(c, account, "SELECT credyt.connect_stripe(%s, %s)", stripe_key, whsec)
    scoped(c, account, "SELECT credyt.create_product('chat', 'Chat', %s)", PRICES)
    cust = scoped(c, account, "SELECT credyt.create_customer('Robin', %s)", f"robin-{RUN}")[0]
    other = scoped(c, account, "SELECT credyt.create_customer('Sam', %s)", f"sam-{RUN}")[0]
    for who in (cust, other):
        scoped(c, account, "SELECT credyt.subscribe(%s, 'chat')", who)
        scoped(c, account, "SELECT credyt.adjust(%s, %s, 'USD', 20, 'external_topup')", who, f"fund-{who}")
    api = CredytApiClient(ServiceKeyCredential(key), endpoint=URL)
    return account, api, cust, other, stripe_key


def charge(c, account, cust, n, prefix):
    for i in range(n):
        scoped(c, account, "SELECT event_id FROM credyt.record_usage(%s, %s, 'chat', subject => 'agent-7')",
               cust, f"{prefix}-{RUN}-{i}")


def links_and_sessions(c, account, api, cust, other):
    """Tokens are single-purpose and expire; a bad link lands on failure_url."""
    back = URL + "/healthz?back"
    fail = URL + "/healthz?failed"
    s = api.billing_portal.create_portal_session({"customer_id": cust, "return_url": back, "failure_url": fail})
    assert s.redirect_url.startswith(URL + "/billing-portal/open?token="), s
    token = s.redirect_url.split("token=")[1]
    status, headers, _ = get("/billing-portal/open?token=" + token)
    assert status == 303 and headers["Location"].startswith("/portal#session="), (status, headers)
    cookie_header = headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header and "SameSite" in cookie_header, cookie_header
    cookie = cookie_header.split(";")[0]
    status, _, body = get("/portal/api/summary", cookie)
    summary = json.loads(body)
    assert status == 200 and summary["customer"]["id"] == cust and summary["return_url"] == back, summary
    # The session also works as a bearer token (what an embedded page sends).
    session_token = cookie.split("=", 1)[1]
    assert get("/portal/api/summary", bearer=session_token)[0] == 200
    # The link is not a session, nor the session a link.
    assert get("/portal/api/summary", "credyt_portal=" + token)[0] == 401
    assert get("/portal/api/summary", bearer=token)[0] == 401
    assert get("/billing-portal/open?token=" + session_token)[0] in (303, 400)
    assert get("/billing-portal/open?token=" + session_token)[1].get("Set-Cookie") is None
    # No session: the page (which holds no data) but none of the data.
    assert get("/portal/api/summary")[0] == 401 and get("/portal/api/stream")[0] == 401 and get("/portal")[0] == 200
    # Tampered: the grant's failure_url; garbage: 400.
    status, headers, _ = get("/billing-portal/open?token=" + token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert status == 303 and headers["Location"] == fail, (status, headers)
    assert get("/billing-portal/open?token=garbage")[0] == 400
    # Expired (signed by the server's key, but past its time): the failure_url too.
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    expired = mint(dict(claims, exp=int(time.time()) - 5))
    status, headers, _ = get("/billing-portal/open?token=" + expired)
    assert status == 303 and headers["Location"] == fail, (status, headers)
    # Another customer's session, another tenant's key: none of Robin's data.
    s2 = api.billing_portal.create_portal_session({"customer_id": other, "return_url": back, "failure_url": fail})
    c2 = get("/billing-portal/open?token=" + s2.redirect_url.split("token=")[1])[1]["Set-Cookie"].split(";")[0]
    body = get("/portal/api/summary", c2)[2] + get("/portal/api/usage", c2)[2] + get("/portal/api/grants", c2)[2]
    assert cust.encode() not in body and b"Robin" not in body, body[:300]
    # What a request can name (a wallet account) is always the session's customer's.
    req = urllib.request.Request(URL + "/portal/api/auto-topup", method="POST", headers={
        "Cookie": c2, "Content-Type": "application/json"}, data=json.dumps(
        {"account_id": "default:USD", "enabled": True, "threshold": 1, "amount": 9}).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    rows = c.execute("SELECT customer_id, enabled FROM credyt.auto_topups WHERE customer_id = ANY(%s) ORDER BY 1",
                     ([cust, other],)).fetchall()
    assert dict(rows) == {cust: False, other: True}, rows
    return s.redirect_url


def browser(c, account, api, cust, stripe_key):
    from playwright.sync_api import sync_playwright
    from fake_stripe import FakeStripe

    fake = FakeStripe(os.path.join(os.path.dirname(sys.executable), "localstripe"), int(os.environ["CREDYT_TEST_STRIPE_PORT"]))
    try:
        charge(c, account, cust, 12, "hist")  # 20 - 12 × 0.25 = 17
        link = api.billing_portal.create_portal_session(
            {"customer_id": cust, "return_url": URL + "/healthz?back", "failure_url": URL + "/healthz?failed"}).redirect_url
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(link)
            assert page.url == URL + "/portal", page.url  # (the session's fragment is dropped at once)
            card = page.locator('[data-account="default:USD"] .amount')
            card.wait_for()
            page.wait_for_function("() => document.querySelector('[data-account=\"default:USD\"] .amount').textContent.includes('17')")
            assert "$17.00" in card.inner_text(), card.inner_text()
            assert "Robin" in page.inner_text("h1")
            # Charged over SQL: the page shows it (server-sent events), no reload.
            started = time.monotonic()
            charge(c, account, cust, 1, "live")
            page.wait_for_function(
                "() => document.querySelector('[data-account=\"default:USD\"] .amount').textContent.includes('16.75')",
                timeout=10000)
            print(f"portal: a charge reached the page in {time.monotonic() - started:.2f} s")
            # Usage history, paged by ten: the live charge's event joins it (13) without a reload.
            page.wait_for_function("() => document.querySelector('#page').textContent === '1–10 of 13'")
            assert page.locator("#usage tr").count() == 10
            page.click("#next")
            page.wait_for_function("() => document.querySelector('#page').textContent.includes('11–')")
            assert page.locator("#usage tr").count() == 3, page.locator("#usage tr").count()  # 13 events now
            assert "agent-7" in page.inner_text("#usage")
            page.click("#prev")
            # Auto top-up settings: labelled fields, saved with set_auto_topup.
            page.get_by_label("When the balance falls below").fill("5")
            page.get_by_label("Add", exact=True).fill("30")
            page.get_by_label("Enabled").check()
            page.get_by_role("button", name="Save").click()
            page.wait_for_function("() => document.querySelector('#auto-status').textContent === 'Saved.'")
            row = scoped(c, account, "SELECT enabled, threshold::text, amount::text FROM credyt.auto_topups "
                         "WHERE customer_id = %s AND account_id = 'default:USD'", cust)
            assert row == (True, "5", "30"), row
            # By keyboard alone: Enter in a field submits its form.
            page.locator("#auto-status").evaluate("e => e.textContent = ''")
            page.get_by_label("When the balance falls below").fill("6")
            page.get_by_label("When the balance falls below").press("Enter")
            page.wait_for_function("() => document.querySelector('#auto-status').textContent === 'Saved.'")
            row = scoped(c, account, "SELECT threshold::text FROM credyt.auto_topups "
                         "WHERE customer_id = %s AND account_id = 'default:USD'", cust)
            assert row == ("6",), row
            page.screenshot(path=os.path.join(SHOTS, "portal-desktop.png"), full_page=True)
            phone = b.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.context.add_cookies(page.context.cookies())
            phone.goto(URL + "/portal")
            phone.locator('[data-account="default:USD"] .amount').wait_for()
            width = phone.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, width  # no sideways scrolling at phone width
            phone.screenshot(path=os.path.join(SHOTS, "portal-phone.png"), full_page=True)
            # Embedded: one script and one element on another site's page (served from
            # `localhost`, another site than the server's 127.0.0.1, both on loopback as
            # Chromium's private-network rules want).
            embedded = api.billing_portal.create_portal_session(
                {"customer_id": cust, "return_url": URL + "/healthz", "failure_url": URL + "/healthz"}).redirect_url
            host = host_page(f'<!doctype html><title>Shop</title><h1>Shop</h1><script src="{URL}/portal/embed.js">'
                             f'</script><credyt-portal src="{embedded}"></credyt-portal>')
            embed = b.new_context().new_page()
            embed.goto(host)
            frame = embed.frame_locator("credyt-portal iframe")
            frame.locator('[data-account="default:USD"] .amount').wait_for()
            assert "$" in frame.locator('[data-account="default:USD"] .amount').inner_text()
            charge(c, account, cust, 1, "embedded")
            frame.locator('[data-account="default:USD"] .amount', has_text="16.50").wait_for(timeout=10000)
            embed.context.close()
            # An expired link (signed, but past its time) lands on the failure_url.
            token = link.split("token=")[1]
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            expired_page = b.new_page()
            expired_page.goto(URL + "/billing-portal/open?token=" + mint(dict(claims, exp=int(time.time()) - 5)))
            assert expired_page.url == URL + "/healthz?failed", expired_page.url
            # A top-up: the Pay button takes the customer to Stripe's (fake) payment page.
            page.get_by_label("Amount", exact=True).fill("10")
            page.get_by_role("button", name="Pay").click()
            page.wait_for_url(fake.url + "/pay/cs_test_*", timeout=10000)
            top = scoped(c, account, "SELECT status, payment_amount::text FROM credyt.topups "
                         "WHERE customer_id = %s AND kind = 'checkout'", cust)
            assert top == ("pending", "10"), top
            b.close()
        print(f"portal: screenshots in {SHOTS}")
    finally:
        fake.close()


def host_page(html):
    """Serves `html` from a loopback server, as http://localhost:PORT/ (its URL)."""
    import http.server
    import threading
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://localhost:{server.server_address[1]}/account"


def secrets_stay_out_of_logs(c, stripe_key):
    path = os.environ.get("CREDYT_SERVER_LOG")
    if not path:
        return
    log = open(path, encoding="utf-8", errors="replace").read()
    assert stripe_key not in log, "the Stripe key is in the server's log"
    assert "whsec_" not in log and "sk_live_" not in log, "a secret is in the server's log"
    hashes = [r[0] for r in c.execute("SELECT secret_hash FROM credyt.portal_grant").fetchall()]
    assert hashes and not any(h in log for h in hashes)


def main():
    c = admin()
    results = []

    def check(name, f):
        started = time.monotonic()
        try:
            f()
            results.append(True)
            print(f"test portal::{name} ... ok ({time.monotonic() - started:.1f}s)")
        except Exception:
            results.append(False)
            print(f"test portal::{name} ... FAILED")
            traceback.print_exc()

    account, api, cust, other, stripe_key = setup(c)
    check("links_sessions_and_confinement", lambda: links_and_sessions(c, account, api, cust, other))
    check("in_a_browser", lambda: browser(c, account, api, cust, stripe_key))
    check("secrets_stay_out_of_logs", lambda: secrets_stay_out_of_logs(c, stripe_key))
    failed, passed = results.count(False), results.count(True)
    print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed; 0 ignored")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
