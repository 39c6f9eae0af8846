"""A fake Stripe for the tests: localstripe (PyPI), run as a child process on loopback,
behind a small in-process wrapper that adds what localstripe lacks and credyt needs:

  * Checkout Sessions (localstripe answers 404 for /v1/checkout/sessions): created,
    read, and "paid" by the test, which then confirms a real PaymentIntent in
    localstripe with the card it chose (pm_card_visa, or pm_card_chargeCustomerFail
    for a decline) so that customers, payment methods and PaymentIntents are
    localstripe's own;
  * Idempotency-Key (localstripe ignores it): the first answer to a key is replayed;
  * fault injection: the next N requests to a path answer 500 (to prove that credyt
    retries with the same key and Stripe does the work once).

Everything listens on 127.0.0.1 only.
"""

import http.server
import json
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class FakeStripe:
    def __init__(self, localstripe_bin, port=0):
        self.ls_port = free_port()
        self.ls = subprocess.Popen([localstripe_bin, "--port", str(self.ls_port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sessions = {}
        self.idempotent = {}
        self.faults = {}        # path -> number of 500s still to answer
        self.requests = []      # (method, path, idempotency key)
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                fake.handle(self, "GET")

            def do_POST(self):
                fake.handle(self, "POST")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        deadline = time.monotonic() + 20
        while True:
            try:
                self.localstripe("GET", "/v1/customers", "sk_test_probe")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self):
        self.server.shutdown()
        self.ls.terminate()
        self.ls.wait(10)

    # -- HTTP ----------------------------------------------------------------------

    def handle(self, h, method):
        body = h.rfile.read(int(h.headers.get("content-length", 0) or 0)).decode()
        path = h.path
        key = h.headers.get("Idempotency-Key")
        auth = h.headers.get("Authorization", "")
        with self.lock:
            self.requests.append((method, path.split("?")[0], key))
            if self.faults.get(path, 0) > 0:
                self.faults[path] -= 1
                return reply(h, 500, {"error": {"message": "injected fault"}})
            if method == "POST" and key and (path, key) in self.idempotent:
                status, answer = self.idempotent[(path, key)]
                return reply(h, status, answer)
        if path == "/v1/checkout/sessions" and method == "POST":
            status, answer = 200, self.create_session(urllib.parse.parse_qs(body))
        elif path.startswith("/v1/checkout/sessions/") and method == "GET":
            s = self.sessions.get(path.rsplit("/", 1)[1])
            status, answer = (200, s) if s else (404, {"error": {"message": "No such checkout session"}})
        else:
            status, answer = self.forward(method, path, body, auth)
        if method == "POST" and key:
            with self.lock:
                self.idempotent[(path, key)] = (status, answer)
        reply(h, status, answer)

    def forward(self, method, path, body, auth):
        req = urllib.request.Request(f"http://127.0.0.1:{self.ls_port}{path}", method=method,
                                     data=body.encode() if method == "POST" else None,
                                     headers={"Authorization": auth,
                                              "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def localstripe(self, method, path, key, form=None):
        data = urllib.parse.urlencode(form or {}).encode() if method == "POST" else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.ls_port}{path}", method=method, data=data,
                                     headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}")

    # -- Checkout Sessions ---------------------------------------------------------

    def create_session(self, form):
        one = {k: v[0] for k, v in form.items()}
        meta = {k[len("metadata["):-1]: v for k, v in one.items() if k.startswith("metadata[")}
        pi_meta = {k[len("payment_intent_data[metadata]["):-1]: v for k, v in one.items()
                   if k.startswith("payment_intent_data[metadata][")}
        sid = "cs_test_" + secrets.token_hex(12)
        session = {
            "id": sid, "object": "checkout.session", "mode": one.get("mode"), "status": "open",
            "payment_status": "unpaid", "url": f"{self.url}/pay/{sid}", "expires_at": int(time.time()) + 86400,
            "success_url": one.get("success_url"), "cancel_url": one.get("cancel_url"),
            "client_reference_id": one.get("client_reference_id"), "metadata": meta,
            "currency": one.get("line_items[0][price_data][currency]"),
            "amount_total": int(one.get("line_items[0][price_data][unit_amount]", "0")),
            "setup_future_usage": one.get("payment_intent_data[setup_future_usage]"),
            "payment_intent_metadata": pi_meta, "customer": None, "payment_intent": None,
        }
        self.sessions[sid] = session
        return session

    def pay(self, sid, key, card="pm_card_visa"):
        """The customer pays the session with `card`: a localstripe customer and a
        confirmed PaymentIntent. Returns (event type, object) of the webhook Stripe
        would send: checkout.session.completed, or payment_intent.payment_failed."""
        s = self.sessions[sid]
        customer = self.localstripe("POST", "/v1/customers", key, {"email": "payer@example.com"})
        pm = self.localstripe("POST", f"/v1/payment_methods/{card}/attach", key, {"customer": customer["id"]})
        form = {"amount": s["amount_total"], "currency": s["currency"], "customer": customer["id"],
                "payment_method": pm.get("id", card), "confirm": "true"}
        form.update({f"metadata[{k}]": v for k, v in s["payment_intent_metadata"].items()})
        pi = self.localstripe("POST", "/v1/payment_intents", key, form)
        if "error" in pi:
            failed = {"id": pi["error"].get("payment_intent", {}).get("id", "pi_declined"), "object": "payment_intent",
                      "status": "requires_payment_method", "customer": customer["id"],
                      "last_payment_error": {"code": pi["error"].get("code")}, "metadata": s["payment_intent_metadata"]}
            return "payment_intent.payment_failed", failed
        s.update(status="complete", payment_status="paid", customer=customer["id"], payment_intent=pi["id"],
                 payment_method=pi.get("payment_method"))
        return "checkout.session.completed", dict(s)

    def expire(self, sid):
        s = self.sessions[sid]
        s.update(status="expired")
        return "checkout.session.expired", dict(s)


def event(kind, obj):
    """A Stripe event envelope, serialised once (the signature covers these bytes)."""
    return json.dumps({"id": "evt_" + secrets.token_hex(12), "object": "event", "type": kind,
                       "created": int(time.time()), "data": {"object": obj}})


def reply(h, status, answer):
    body = json.dumps(answer).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
