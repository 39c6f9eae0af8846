//! What a client sees when it gets something wrong: the CY SQLSTATE, a message that
//! names the object, and a detail or hint.

use credyt_tests::*;

#[test]
fn domain_errors_carry_code_message_and_hint() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Errors");
    let mut s = t.session();
    s.batch_execute("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.set_overdraft('ann', 'USD', 0);")
        .unwrap();
    let cases = [
        ("SELECT credyt.charge('ann', 'c1', 'USD', 5)", "CY402", "insufficient funds in default:USD"),
        ("SELECT credyt.charge('ghost', 'c1', 'USD', 5)", "CY404", "unknown customer ghost"),
        ("SELECT credyt.charge('ann', 'c1', 'usd', 5)", "CY404", "unknown asset usd"),
        ("SELECT credyt.charge('ann', 'c1', 'USD', 'NaN')", "CY400", "amount is NaN"),
        ("SELECT credyt.adjust('ann', 'a1', 'USD', 5, 'bonus')", "CY400", "unknown reason"),
    ];
    for (sql, code, message) in cases {
        let e = s.batch_execute(sql).expect_err(sql);
        let db = e.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), code, "{sql}");
        assert!(db.message().contains(message), "{sql}: {}", db.message());
        assert!(db.hint().is_some() || db.detail().is_some(), "{sql}: no detail or hint");
    }
    s.batch_execute("SELECT credyt.adjust('ann', 'a1', 'USD', 5, 'gift')").unwrap();
    let e = s.batch_execute("SELECT credyt.adjust('ann', 'a1', 'USD', 6, 'gift')").unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "CY409");
    assert!(db.detail().unwrap_or_default().contains("\"amount\": \"5\""), "{:?}", db.detail());
    // The session is usable after each error, and nothing partial was written.
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "5");
    assert!(ledger_problems(&mut s).is_empty());
}

#[test]
fn a_rolled_back_transaction_leaves_nothing() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Rollback");
    let mut s = t.session();
    s.batch_execute("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let mut tx = s.transaction().unwrap();
    tx.batch_execute(
        "SELECT credyt.adjust('ann', 'a1', 'USD', 5, 'gift'); SELECT credyt.charge('ann', 'c1', 'USD', 2)",
    )
    .unwrap();
    tx.rollback().unwrap();
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "0");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.entries"), "0");
    // The keys are free again: the same calls now apply.
    s.batch_execute("SELECT credyt.adjust('ann', 'a1', 'USD', 5, 'gift'); SELECT credyt.charge('ann', 'c1', 'USD', 2)")
        .unwrap();
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "3");
}
