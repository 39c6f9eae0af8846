// Helpers for the in-database tests (included into `mod tests`).

/// Runs `sql` in a subtransaction and returns the SQLSTATE it raised, if any.
/// (pgrx reports caught errors with standard codes only, so the CY codes are read
/// through plpgsql's SQLSTATE.)
#[allow(dead_code)]
fn sqlstate_of(sql: &str) -> Option<String> {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $f$ \
         BEGIN EXECUTE stmt; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $f$",
    )
    .expect("create helper");
    Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()]).expect("sqlstate_of")
}

#[allow(dead_code)]
fn text(sql: &str) -> String {
    Spi::get_one::<String>(sql).expect(sql).expect("NULL result")
}

#[allow(dead_code)]
fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).expect(sql).expect("NULL count")
}

/// Every row verify_ledger() returns, as "check: detail".
#[allow(dead_code)]
fn ledger_problems() -> Vec<String> {
    Spi::connect(|c| {
        let t = c.select("SELECT \"check\" || ': ' || detail FROM credyt.verify_ledger()", None, &[]).unwrap();
        t.map(|r| r.get::<String>(1).unwrap().unwrap()).collect()
    })
}

#[allow(dead_code)]
fn assert_ledger_ok() {
    let problems = ledger_problems();
    assert!(problems.is_empty(), "verify_ledger: {problems:?}");
}

/// A fresh connected account, put in scope for the rest of the test transaction.
#[allow(dead_code)]
fn fresh_account(name: &str) -> String {
    Spi::run("RESET credyt.account").unwrap();
    let acc = text(&format!("SELECT credyt.create_account('{name}')"));
    Spi::run(&format!("SET LOCAL credyt.account = '{acc}'")).unwrap();
    acc
}

/// Counts every row the ledger has, to prove a failed call wrote nothing.
#[allow(dead_code)]
fn ledger_rows() -> i64 {
    count(
        "SELECT (SELECT count(*) FROM credyt.entry) + (SELECT count(*) FROM credyt.lot) \
         + (SELECT count(*) FROM credyt.ledger_txn) + (SELECT count(*) FROM credyt.wallet_account) \
         + (SELECT count(*) FROM credyt.customer) + (SELECT count(*) FROM credyt.account)",
    )
}

#[allow(dead_code)]
fn balance(customer: &str) -> String {
    text(&format!("SELECT credyt.balance('{customer}', 'USD')::text"))
}

/// Runs `sql` in a subtransaction and returns "SQLSTATE message" of its error, if any.
#[allow(dead_code)]
fn error_of(sql: &str) -> Option<String> {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.error_of(stmt text) RETURNS text LANGUAGE plpgsql AS $f$ \
         BEGIN EXECUTE stmt; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$",
    )
    .expect("create helper");
    Spi::get_one_with_args::<String>("SELECT pg_temp.error_of($1)", &[sql.into()]).expect("error_of")
}

/// Runs `sql` (one text value) once, in a subtransaction: its value, or "SQLSTATE
/// message" of its error.
#[allow(dead_code)]
fn outcome_of(sql: &str) -> String {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.outcome_of(stmt text) RETURNS text LANGUAGE plpgsql AS $f$ \
         DECLARE r text; BEGIN EXECUTE stmt INTO r; RETURN r; \
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $f$",
    )
    .expect("create helper");
    Spi::get_one_with_args::<String>("SELECT pg_temp.outcome_of($1)", &[sql.into()]).expect("outcome_of").expect("NULL")
}
