//! The per-backend catalog cache (src/usage/lookups.rs, customers, scope): a change
//! committed in one session takes effect for the very next call in another, whose
//! backend has the old answer cached. Two real connections throughout.

use credyt_tests::*;
use rust_decimal::Decimal;

const PRICE: &str = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "img", "usage_type": "unit"},
    "pricing": [{"asset": "USD", "values": [{"unit_price": 0.5}]}]}]"#;

/// (status, charged, cost) of one record_usage call.
fn record(c: &mut postgres::Client, customer: &str, id: &str, data: &str) -> (String, Decimal, Option<Decimal>) {
    let r = c
        .query_one(
            "SELECT status, charged FROM credyt.record_usage($1, $2, 'img', $3::text::jsonb)",
            &[&customer, &id, &data],
        )
        .unwrap();
    // (a statement of its own: the call's statement does not see the row it wrote)
    let cost = c.query_one("SELECT cost FROM credyt.usage WHERE event_id = $1", &[&id]).unwrap().get(0);
    (r.get(0), r.get(1), cost)
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn catalog_changes_in_one_session_take_effect_on_the_next_call_in_another() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Cache");
    let (mut a, mut b) = (t.session(), t.session());
    a.batch_execute(
        "SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'fund', 'USD', 100, 'external_topup')",
    )
    .unwrap();
    // B's backend caches: no subscription, so no match.
    assert_eq!(record(&mut b, "ann", "e1", "{}").0, "no_match");
    assert_eq!(record(&mut b, "ann", "e2", "{}").0, "no_match");

    // A new product and subscription, committed in A: B's next call charges.
    a.batch_execute(&format!("SELECT credyt.create_product('img', 'Images', '{PRICE}')")).unwrap();
    assert_eq!(record(&mut b, "ann", "e3", "{}").0, "no_match", "a product alone changes nothing");
    let sub: String = a.query_one("SELECT credyt.subscribe('ann', 'img')", &[]).unwrap().get(0);
    assert_eq!(record(&mut b, "ann", "e4", "{}"), ("charged".into(), d("0.5"), None));

    // A model cost set in A: B's next event carries it; changed again, the new one.
    a.batch_execute("SELECT credyt.set_model_cost('openai', 'gpt-4o', 2, 10)").unwrap();
    let tokens = r#"{"model": "gpt-4o", "input_tokens": 1000000, "output_tokens": 0}"#;
    assert_eq!(record(&mut b, "ann", "e5", tokens).2, Some(d("2")));
    a.batch_execute("SELECT credyt.set_model_cost('openai', 'gpt-4o', 3, 10)").unwrap();
    assert_eq!(record(&mut b, "ann", "e6", tokens).2, Some(d("3")));

    // A new version, and the subscription moved onto it: B's next call prices by it.
    let v2 = PRICE.replace("0.5", "0.25");
    a.batch_execute(&format!("SELECT credyt.create_product_version('img', '{v2}')")).unwrap();
    a.execute("SELECT credyt.change_subscription_version($1)", &[&sub]).unwrap();
    assert_eq!(record(&mut b, "ann", "e7", "{}").1, d("0.25"));

    // The customer's external id changed in A: B's old reference is unknown at once.
    a.batch_execute("SELECT credyt.update_customer('ann', external_id => 'ann-2')").unwrap();
    let e = b.query_one("SELECT credyt.balance('ann')", &[]).unwrap_err();
    assert_eq!(sqlstate(&e), "CY404");
    let e = b.query_one("SELECT * FROM credyt.record_usage('ann', 'e8', 'img')", &[]).unwrap_err();
    assert_eq!(sqlstate(&e), "CY404");
    assert_eq!(record(&mut b, "ann-2", "e9", "{}").0, "charged");

    // Cancelled in A: B's next call matches nothing.
    a.execute("SELECT credyt.cancel_subscription($1)", &[&sub]).unwrap();
    assert_eq!(record(&mut b, "ann-2", "e10", "{}").0, "no_match");

    // A change B made and rolled back leaves no trace in B's cache.
    b.batch_execute("BEGIN; SELECT credyt.subscribe('ann-2', 'img')").unwrap();
    assert_eq!(record(&mut b, "ann-2", "e11", "{}").0, "charged", "its own uncommitted subscription");
    b.batch_execute("ROLLBACK").unwrap();
    assert_eq!(record(&mut b, "ann-2", "e12", "{}").0, "no_match");

    // The role rebound to another account by an administrator: B's next call is in it.
    let other = Tenant::create(&mut admin, "Cache other");
    let balance: Decimal = b.query_one("SELECT credyt.balance('ann-2')", &[]).unwrap().get(0);
    assert_eq!(balance, d("98"), "e4, e5 and e6 at 0.5, e7 and e9 at 0.25");
    admin.execute("SELECT credyt.bind_role($1, $2)", &[&t.role, &other.account]).unwrap();
    let e = b.query_one("SELECT credyt.balance('ann-2')", &[]).unwrap_err();
    assert_eq!(sqlstate(&e), "CY404", "ann-2 is not a customer of the account the role is bound to now");
    admin.execute("SELECT credyt.bind_role($1, $2)", &[&t.role, &t.account]).unwrap();
    assert!(ledger_problems(&mut a).is_empty());
}

#[test]
fn usage_rules_set_in_one_session_apply_at_once_in_another() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Cache rules");
    let (mut a, mut b) = (t.session(), t.session());
    a.batch_execute(&format!(
        "SELECT credyt.create_customer('Ann', 'ann', cohort => 'pro'); \
         SELECT credyt.create_product('img', 'Images', '{PRICE}'); SELECT credyt.subscribe('ann', 'img')"
    ))
    .unwrap();
    // B's backend caches: no rules for img
    assert_eq!(record(&mut b, "ann", "e1", "{}").0, "charged");
    assert_eq!(record(&mut b, "ann", "e2", "{}").0, "charged");
    // a free tier set in A: B's next event is free
    a.batch_execute("SELECT credyt.set_free_tier('img', 1, 'month', cohort => 'pro')").unwrap();
    assert_eq!(record(&mut b, "ann", "e3", "{}").0, "free");
    // the customer leaves the cohort in A: the rule no longer applies in B
    a.batch_execute("SELECT credyt.update_customer('ann', cohort => 'basic')").unwrap();
    assert_eq!(record(&mut b, "ann", "e4", "{}").0, "charged");
    // a limit of 0 set in A: B's next event is refused; removed, B's next is charged
    a.batch_execute("SELECT credyt.set_usage_limit('img', 0, '1 hour')").unwrap();
    let limited: String =
        b.query_one("SELECT status FROM credyt.record_usage('ann', 'e5', 'img')", &[]).unwrap().get(0);
    assert_eq!(limited, "limited");
    a.batch_execute("SELECT credyt.set_usage_limit('img', NULL, NULL)").unwrap();
    assert_eq!(record(&mut b, "ann", "e6", "{}").0, "charged");
    assert!(ledger_problems(&mut a).is_empty());
}
