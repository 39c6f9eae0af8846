"""Hostile input, fuzzed (issue 9): every function an application role may call, with
generated and malformed arguments, over a real connection as a bound tenant role.

Assertions, for every call:
  * the backend never crashes (the connection survives every call);
  * no internal error (XX000) ever surfaces, nor any other code outside class CY or
    the 22xxx class Postgres uses for input it refuses itself;
  * a rejected call writes nothing (the tenant's row counts are unchanged);
and at the end verify_ledger() is empty.

  CREDYT_TEST_DATABASE_URL  libpq connection string of the test database (superuser)
  CREDYT_FUZZ_CALLS         number of calls (default 10000)
  CREDYT_FUZZ_SEED          seed (default 1): a failure replays from it

Prints "test result: ok. 1 passed; 0 failed" (cargo's form, which scripts/test.sh
counts) or a failure with the call that caused it, and exits non-zero then.
"""

import collections
import json
import os
import sys
import time

import psycopg
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

DSN = os.environ["CREDYT_TEST_DATABASE_URL"]
CALLS = int(os.environ.get("CREDYT_FUZZ_CALLS", "10000"))
SEED = int(os.environ.get("CREDYT_FUZZ_SEED", "1"))
RUN = f"{int(time.time() * 1000) % 10**10}"

PRICES = json.dumps([{
    "type": "usage_based",
    "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens"},
    "pricing": [{"asset": "USD", "values": [{"unit_price": 0.001, "volume_rate": 0.00002}]}],
}])


def admin():
    c = psycopg.connect(DSN, autocommit=True)
    return c


def one(c, sql, *args):
    return c.execute(sql, args).fetchone()[0]


def tenant(a, name):
    """A connected account, a LOGIN role bound to it, and a session as that role."""
    account = one(a, "SELECT credyt.create_account(%s)", f"{name} {RUN}")
    role = f"credyt_fuzz_{name.lower()}_{RUN}"
    a.execute(f"CREATE ROLE {role} LOGIN")
    a.execute("SELECT credyt.grant_access(%s)", (role,))
    a.execute("SELECT credyt.bind_role(%s, %s)", (role, account))
    s = psycopg.connect(DSN + f" user={role}", autocommit=True)
    s.execute("SET statement_timeout = '20s'")
    return account, role, s


def seed_tenant(s, ext):
    """A customer with a funded wallet, a product and subscription, a hold, a grant, a
    webhook and an event: things for the fuzzer to name and to break."""
    s.execute("SELECT credyt.create_product('chat', 'Chat', %s)", (PRICES,))
    cust = one(s, "SELECT credyt.create_customer('Ann', %s)", ext)
    s.execute("SELECT credyt.subscribe(%s, 'chat')", (ext,))
    sub = one(s, "SELECT id FROM credyt.subscriptions LIMIT 1")
    s.execute("SELECT credyt.adjust(%s, 'seed', 'USD', 100, 'external_topup')", (ext,))
    hold = one(s, "SELECT credyt.authorize(%s, 'seed-hold', 'USD', 1)", ext)
    grant = one(s, "SELECT credyt.grant(%s, 'seed-grant', 'USD', 5, every => '1 month')", ext)
    hook = one(s, "SELECT id FROM credyt.create_webhook('https://example.com/fuzz')")
    event = one(s, "SELECT credyt.send_test_event()")
    s.execute("SELECT credyt.set_auto_topup(%s, 'USD', 1000, 10)", (ext,))
    topup = one(s, "SELECT id FROM credyt.topups LIMIT 1")
    s.execute("SELECT credyt.create_asset('tokens', rate => 0.001)")
    s.execute("SELECT credyt.create_product_version('chat', %s, publish => false)", (PRICES,))
    vendor = one(s, "SELECT credyt.create_vendor('Vendor', 'seed-vendor')")
    return [cust, ext, sub, hold, "seed-hold", grant, "seed-grant", hook, event, topup, "chat", "seed", vendor]


COUNTS = """SELECT concat_ws('/', (SELECT count(*) FROM credyt.customers), (SELECT count(*) FROM credyt.entries),
  (SELECT count(*) FROM credyt.lots), (SELECT count(*) FROM credyt.usage), (SELECT count(*) FROM credyt.holds),
  (SELECT count(*) FROM credyt.grants), (SELECT count(*) FROM credyt.events), (SELECT count(*) FROM credyt.products),
  (SELECT count(*) FROM credyt.subscriptions), (SELECT count(*) FROM credyt.webhooks), (SELECT count(*) FROM credyt.assets),
  (SELECT count(*) FROM credyt.topups), (SELECT count(*) FROM credyt.deliveries),
  (SELECT count(*) FROM credyt.asset_rates), (SELECT count(*) FROM credyt.vendors),
  (SELECT string_agg(concat_ws(':', id, version, status, is_default), ',' ORDER BY id, version) FROM credyt.products),
  (SELECT string_agg(concat_ws(':', id, version, ends_at), ',' ORDER BY id) FROM credyt.subscriptions),
  (SELECT string_agg(concat_ws(':', status, amount), ',' ORDER BY id) FROM credyt.holds),
  (SELECT sum(amount) FROM credyt.entries))"""


# ---------------------------------------------------------------------------------
# Argument strategies, by SQL type. Values go over the wire as text and are cast by
# the statement, so a value Postgres cannot read is its own 22xxx error.

UNICODE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
NUL_LIKE = st.sampled_from(["\\0", "\\u0000", "\ufeff", "\u202e", "\u200b", "%s", "'; DROP TABLE x; --", "\\", "\"", "{}"])


def text_values(ids):
    return st.one_of(
        st.sampled_from(ids + ["USD", "EUR", "tokens", "default", "reserve", "gift", "external_topup",
                               "external_refund", "other", "promotion", "bundled", "paid", "expire", "rollover",
                               "chat", "webhook.test", "*", "grant.*", "acc_00000000000000000000000000",
                               "cust_00000000000000000000000000"]),
        UNICODE,
        NUL_LIKE,
        st.just("x" * 256),
        st.just("x" * 5000),
        st.just(""),
    )


NUMERIC = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0", "-0", "1e308", "1e-30", "1e16", "-1e16", "0.0000000000001",
                     "0.000000000001", "123456789012345678901234567890", "-5", "1.5", "0.01", "10", "99.999",
                     "1e1000", "0.1234567890123"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-10**20, max_value=10**20).map(str),
    st.integers(-10**6, 10**6).map(str),
)
INTEGER = st.one_of(st.sampled_from(["-2147483648", "2147483647", "0", "-1", "1", "2", "1000000"]),
                    st.integers(-5, 100).map(str))
BOOLEAN = st.sampled_from(["true", "false"])
TIMESTAMP = st.sampled_from(["infinity", "-infinity", "now", "2026-01-01 00:00+00", "2099-12-31 23:59:59+00",
                             "1970-01-01 00:00+00", "294276-12-31 23:59:59+00", "4713-01-01 00:00+00 BC",
                             "2026-12-01 12:00:00.123456+00", "epoch"])
INTERVAL = st.sampled_from(["1 microsecond", "-1 day", "1000 years", "1 month", "0", "P1M", "P7D", "1 hour", "59 minutes",
                            "178000000 years", "1 month -40 days", "15 minutes", "-15 minutes", "366 days 1 second"])


def deep(n):
    return "[" * n + "]" * n


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False),
                      UNICODE, st.sampled_from(["NaN", "1e400", "-0", "USD", "chat"]))
JSON_TREE = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(["type", "asset", "amount", "name", "every", "pricing", "values", "unit_price", "customer",
                     "event_id", "event_type", "data", "model", "input_tokens", "output_tokens", "vendor", "currency",
                     "dimensions", "usage_calculation", "usage_type", "volume_field", "x"]) | UNICODE, kids, max_size=5),
    max_leaves=20)


def price_mutations():
    base = json.loads(PRICES)
    return st.sampled_from([
        json.dumps(base),
        json.dumps([{**base[0], "type": "fixed"}]),
        json.dumps([{**base[0], "pricing": [{"asset": "USD", "values": [{"unit_price": "NaN"}]}]}]),
        json.dumps([{**base[0], "pricing": [{"asset": "USD", "values": [{"unit_price": 1e400}]}]}]),
        json.dumps([{**base[0], "pricing": [{"asset": "nope", "values": [{"unit_price": 1}]}]}]),
        json.dumps([{"name": "x", "asset": "USD", "amount": 1, "every": "PT1S"}]),
        json.dumps([{"name": "x", "asset": "USD", "amount": -1, "every": "1 month"}]),
        json.dumps([{"customer": "ann", "event_id": "b1", "event_type": "chat", "data": {"output_tokens": 1}}]),
        json.dumps([{"customer": "ann", "event_id": "b1", "event_type": "chat", "occurred_at": "infinity"}]),
        json.dumps([{"vendor": "openai", "amount": "1e99", "currency": "USD"}]),
        json.dumps([{"vendor": "openai", "amount": -1, "currency": "XXX", "category": 5}]),
    ])


JSONB = st.one_of(
    JSON_TREE.map(lambda v: json.dumps(v, allow_nan=False)),
    price_mutations(),
    st.integers(1, 300).map(deep),
    st.integers(1, 300).map(lambda n: '{"a": ' + deep(n) + "}"),
    st.just(json.dumps({"big": "x" * (2 << 20)})),
    st.just("{}"), st.just("[]"), st.just("null"), st.just('"text"'), st.just("1"),
)
TEXT_ARRAY = st.one_of(
    st.sampled_from(["{*}", "{grant.issued}", "{grant.*,webhook.test}", "{}", "{NULL}", "{\"a b\"}", "{nope.*}",
                     "{" + ",".join(["grant.issued"] * 100) + "}"]),
    st.lists(UNICODE, max_size=5).map(lambda xs: "{" + ",".join('"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
                                                                  for x in xs) + "}"),
)


def strategy_for(sql_type, ids):
    return {
        "text": text_values(ids), "numeric": NUMERIC, "integer": INTEGER, "bigint": INTEGER, "boolean": BOOLEAN,
        "timestamp with time zone": TIMESTAMP, "interval": INTERVAL, "jsonb": JSONB, "text[]": TEXT_ARRAY,
        "name": text_values(ids),
    }[sql_type]


def functions(a, role):
    """Every credyt function the role may execute: (name, [arg types], required args)."""
    rows = a.execute(
        """SELECT p.proname, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t),
                  p.pronargs - p.pronargdefaults
           FROM pg_proc p WHERE p.pronamespace = 'credyt'::regnamespace
             AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1, 2""", (role,)).fetchall()
    return [(name, list(types), required) for name, types, required in rows]


def main():
    a = admin()
    a_account, a_role, s = tenant(a, "A")
    b_account, _b_role, b = tenant(a, "B")
    a_ids = seed_tenant(s, "ann")
    b_ids = seed_tenant(b, "bob")
    ids = a_ids + b_ids + [a_account, b_account]
    funcs = functions(a, a_role)
    assert len(funcs) > 20, funcs
    stats = collections.Counter()
    failures = []

    @st.composite
    def calls(draw):
        name, types, required = draw(st.sampled_from(funcs))
        n = draw(st.integers(required, len(types)))
        args = [draw(st.none() | strategy_for(t, ids)) if draw(st.integers(0, 9)) == 0 else draw(strategy_for(t, ids))
                for t in types[:n]]
        return name, types[:n], args

    @seed(SEED)
    @settings(max_examples=CALLS, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink], report_multiple_bugs=False)
    @given(calls())
    def call(c):
        name, types, args = c
        casts = ", ".join(f"%s::{t}" for t in types)
        sql = f"SELECT * FROM credyt.{name}({casts})"
        before = one(s, COUNTS)
        try:
            s.execute(sql, args).fetchall()
            stats["accepted"] += 1
        except psycopg.OperationalError as e:
            raise AssertionError(f"the connection broke (a crashed backend?) on {name}{tuple(map(short, args))}: {e}")
        except psycopg.Error as e:
            code = e.sqlstate or "none"
            stats[code[:2] if code.startswith("22") else code] += 1
            assert code.startswith("CY") or code.startswith("22"), \
                f"{name}{tuple(map(short, args))} raised {code}: {e}"
            after = one(s, COUNTS)
            assert after == before, f"{name}{tuple(map(short, args))} raised {code} but wrote: {before} -> {after}"
        assert one(s, "SELECT 1") == 1

    started = time.time()
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the report is the point
        failures.append(str(e))
    problems = a.execute("SELECT \"check\" || ': ' || detail FROM credyt.verify_ledger()").fetchall()
    if problems:
        failures.append(f"verify_ledger: {problems[:10]}")
    elapsed = time.time() - started
    summary = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
    print(f"fuzz: {sum(stats.values())} calls in {elapsed:.0f} s over {len(funcs)} functions (seed {SEED}): {summary}")
    if failures:
        for f in failures:
            print(f"fuzz failure: {f}")
        print("test result: FAILED. 0 passed; 1 failed; 0 ignored")
        sys.exit(1)
    print("test result: ok. 1 passed; 0 failed; 0 ignored")


def short(v):
    return v if v is None or len(v) <= 60 else v[:57] + "..."


if __name__ == "__main__":
    main()
