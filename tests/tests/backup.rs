//! Backups keep everything (issue 9): pg_dump of a database with credyt, restored
//! into a fresh database, gives the same platform account, every tenant, identical
//! balances, lots and events, every sequence, and an empty verify_ledger().

use credyt_tests::*;
use postgres::{Client, NoTls};
use std::process::Command;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The test cluster's connection string, for database `db`.
fn conninfo(db: &str) -> String {
    let base: Vec<String> = url().split_whitespace().filter(|p| !p.starts_with("dbname=")).map(String::from).collect();
    format!("{} dbname={db}", base.join(" "))
}

fn fresh(admin: &mut Client, db: &str) {
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
}

/// What must survive the round trip, as text, read as the administrator.
fn snapshot(c: &mut Client) -> Vec<String> {
    [
        "SELECT credyt.platform_account()",
        "SELECT string_agg(concat_ws(' ', id, parent_id, name, external_id, channel_key, balance_push), '; ' ORDER BY id) FROM credyt.account",
        "SELECT string_agg(concat_ws(' ', id, account_id, external_id), '; ' ORDER BY id) FROM credyt.customer",
        "SELECT string_agg(concat_ws(' ', customer_id, name, asset, balance, debt, threshold, threshold_armed), '; ' \
           ORDER BY customer_id, name, asset) FROM credyt.wallet_account",
        "SELECT string_agg(concat_ws(' ', id, amount, remaining, effective_at, expires_at, seq), '; ' ORDER BY id) FROM credyt.lot",
        "SELECT string_agg(concat_ws(' ', id, txn_id, amount, kind), '; ' ORDER BY id) FROM credyt.entry",
        "SELECT string_agg(concat_ws(' ', event_id, status, charged), '; ' ORDER BY event_id) FROM credyt.usage_event",
        "SELECT string_agg(id || ' ' || payload::text, '; ' ORDER BY id) FROM credyt.events",
        "SELECT string_agg(concat_ws(' ', event_id, webhook_id, status, claim), '; ' ORDER BY event_id) FROM credyt.delivery",
        "SELECT string_agg(concat_ws(' ', id, next_at), '; ' ORDER BY id) FROM credyt.credit_grant",
        "SELECT string_agg(concat_ws(' ', id, status, amount), '; ' ORDER BY id) FROM credyt.hold",
        "SELECT string_agg(concat_ws(' ', role_oid, account_id), '; ' ORDER BY role_oid) FROM credyt.role_binding",
        "SELECT string_agg(concat_ws(' ', id, subscription_id, next_at, billed_quantity), '; ' ORDER BY id) FROM credyt.subscription_fee",
        "SELECT string_agg(concat_ws(' ', subscription_id, period, seq, amount, status), '; ' \
           ORDER BY subscription_id, period, seq) FROM credyt.subscription_charge",
        "SELECT string_agg(concat_ws(' ', subscription_id, user_ref), '; ' ORDER BY subscription_id) FROM credyt.seat_assignment",
        "SELECT string_agg(concat_ws(' ', account_id, outcome_key, status, txn_id), '; ' ORDER BY account_id) FROM credyt.outcome",
        "SELECT string_agg(concat_ws(' ', account_id, kind, quantity), '; ' ORDER BY account_id) FROM credyt.usage_rule",
        "SELECT string_agg(concat_ws(' ', customer_id, kind, used), '; ' ORDER BY customer_id, kind) FROM credyt.usage_counter",
        "SELECT string_agg(c.relname || '=' || s.last_value, ' ' ORDER BY c.relname) FROM pg_sequences s \
           JOIN pg_class c ON c.relname = s.sequencename WHERE s.schemaname = 'credyt'",
    ]
    .iter()
    .map(|q| c.query_one(*q, &[]).unwrap().get::<_, Option<String>>(0).unwrap_or_default())
    .collect()
}

#[test]
fn a_dump_restores_into_a_fresh_database_with_everything() {
    let mut admin = connect();
    let (src_db, dst_db) = (unique("credyt_dump_src"), unique("credyt_dump_dst"));
    fresh(&mut admin, &src_db);
    fresh(&mut admin, &dst_db);
    let mut src = Client::connect(&conninfo(&src_db), NoTls).unwrap();
    src.batch_execute("CREATE EXTENSION credyt").unwrap();
    let account = text(&mut src, "SELECT credyt.create_account('Acme')");
    let sub_org = text(&mut src, &format!("SELECT credyt.create_account('Acme EU', parent_id => '{account}')"));
    let role = unique("credyt_dump_role");
    src.batch_execute(&format!(
        "CREATE ROLE {role}; SELECT credyt.grant_access('{role}'); SELECT credyt.bind_role('{role}', '{account}')"
    ))
    .unwrap();
    for acc in [&account, &sub_org] {
        src.batch_execute(&format!(
            r#"SET credyt.account = '{acc}';
               SELECT credyt.set_balance_push(true);
               SELECT credyt.create_product('chat', 'Chat', '[{{"type": "usage_based", "usage_calculation": {{"event_type": "chat", "usage_type": "unit"}},
                 "pricing": [{{"asset": "USD", "values": [{{"unit_price": 0.25}}]}}]}}]');
               SELECT credyt.create_customer('Ann', 'ann');
               SELECT credyt.subscribe('ann', 'chat');
               SELECT credyt.adjust('ann', 'top', 'USD', 10, 'external_topup');
               SELECT credyt.grant('ann', 'monthly', 'USD', 2, every => '1 month');
               SELECT credyt.set_threshold('ann', 'USD', 11);
               SELECT * FROM credyt.record_usage('ann', 'e1', 'chat');
               SELECT * FROM credyt.record_usage('ann', 'e2', 'chat');
               SELECT credyt.authorize('ann', 'h1', 'USD', 1);
               SELECT credyt.create_webhook('https://example.com/hooks');
               SELECT credyt.send_test_event();
               SELECT credyt.create_product('team', 'Team', '[{{"type": "seat",
                 "billing_model": {{"type": "recurring", "recurring": {{"interval": "month"}}}},
                 "pricing": [{{"asset": "USD", "values": [{{"unit_price": 1}}]}}]}},
                 {{"type": "outcome", "outcome_type": "won", "settlement_window": "P7D",
                 "pricing": [{{"asset": "USD", "values": [{{"unit_price": 0.5}}]}}]}}]');
               SELECT credyt.assign_seat(credyt.subscribe('ann', 'team'), 'ann@acme.io');
               SELECT * FROM credyt.record_outcome('ann', 'o1', 'won');
               SELECT credyt.set_free_tier('chat', 5, 'month');
               SELECT * FROM credyt.record_usage('ann', 'e3', 'chat');
               RESET credyt.account;"#
        ))
        .unwrap();
    }
    // claims advance the claim sequence, which must come back too
    src.batch_execute("SELECT count(*) FROM credyt._worker_claim('w', 1, 1)").unwrap();
    let before = snapshot(&mut src);
    assert!(ledger_problems(&mut src).is_empty());
    drop(src);

    let file = std::env::temp_dir().join(format!("{src_db}.dump"));
    let dump = Command::new(format!("{PG_BIN}/pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&file)
        .arg("-d")
        .arg(conninfo(&src_db))
        .output()
        .unwrap();
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    let restore =
        Command::new(format!("{PG_BIN}/pg_restore")).arg("-d").arg(conninfo(&dst_db)).arg(&file).output().unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        restore.status.success() && restore.stderr.is_empty(),
        "pg_restore reported errors:\n{}",
        String::from_utf8_lossy(&restore.stderr)
    );

    let mut dst = Client::connect(&conninfo(&dst_db), NoTls).unwrap();
    let after = snapshot(&mut dst);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a, b, "snapshot line {i} differs after the restore");
    }
    assert!(ledger_problems(&mut dst).is_empty(), "{:?}", ledger_problems(&mut dst));
    // the copy works: the bound role is confined, charges go on (the free tier's counter
    // carried on; a new subscription's fee row takes the next id of the restored sequence)
    dst.batch_execute(&format!("SET ROLE {role}")).unwrap();
    assert_eq!(text(&mut dst, "SELECT credyt.current_account()"), account);
    dst.batch_execute("RESET ROLE").unwrap();
    dst.batch_execute(&format!(
        "SET credyt.account = '{account}'; SELECT * FROM credyt.record_usage('ann', 'e4', 'chat'); \
         SELECT credyt.subscribe('ann', 'team')"
    ))
    .unwrap();
    // 10 + 2 - 0.25 × 2 - 1 held - 1 seat - 0.5 outcome, e3 and e4 free, another seat
    assert_eq!(text(&mut dst, "SELECT credyt.balance('ann')::text"), "8");
    assert_eq!(text(&mut dst, "SELECT used::text FROM credyt.free_tier_usage('ann', 'chat')"), "2");
    drop(dst);
    for sql in [
        format!("DROP DATABASE {src_db} WITH (FORCE)"),
        format!("DROP DATABASE {dst_db} WITH (FORCE)"),
        format!("DROP ROLE {role}"),
    ] {
        admin.batch_execute(&sql).unwrap();
    }
}
