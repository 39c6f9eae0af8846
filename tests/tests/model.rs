//! Model-based test: thousands of random adjust/charge/refund/overdraft/replay
//! operations, each compared with a deliberately simple in-memory model of the
//! wallet, then verify_ledger(). Seeded: a failure names the seed and step.

use credyt_tests::*;
use rust_decimal::Decimal;
use std::collections::HashMap;

#[derive(Clone, Debug)]
struct Lot {
    paid: bool,
    priority: i32,
    /// (days until expiry, creation order); None never expires
    expires: Option<(u64, u64)>,
    seq: u64,
    remaining: Decimal,
    /// false for lots that become effective only tomorrow
    live: bool,
}

#[derive(Clone, Debug, Default)]
struct Wallet {
    lots: Vec<Lot>,
    debt: Decimal,
    limit: Option<Decimal>,
}

impl Wallet {
    fn available(&self) -> Decimal {
        self.lots.iter().filter(|l| l.live).map(|l| l.remaining).sum::<Decimal>() - self.debt
    }
    /// Live lot indices in consumption order: priority, earliest expiry (none last), oldest.
    fn order(&self, paid_only: bool) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.lots.len())
            .filter(|&i| {
                self.lots[i].live && self.lots[i].remaining > Decimal::ZERO && (!paid_only || self.lots[i].paid)
            })
            .collect();
        idx.sort_by_key(|&i| {
            let l = &self.lots[i];
            (l.priority, l.expires.is_none(), l.expires.unwrap_or((0, 0)), l.seq)
        });
        idx
    }
    /// Takes up to `amount` from live lots; returns what could not be taken.
    fn draw(&mut self, amount: Decimal, paid_only: bool) -> Decimal {
        let mut need = amount;
        for i in self.order(paid_only) {
            let take = need.min(self.lots[i].remaining);
            self.lots[i].remaining -= take;
            need -= take;
        }
        need
    }
    fn settle(&mut self) {
        let debt = self.debt;
        let unpaid = self.draw(debt, false);
        self.debt = unpaid;
    }
    fn credit(&mut self, lot: Lot) {
        self.lots.push(lot);
        self.settle();
    }
    /// A charge-like debit; Err when the overdraft limit forbids it.
    fn debit(&mut self, amount: Decimal) -> Result<(), ()> {
        if let Some(limit) = self.limit {
            if self.available() - amount < -limit {
                return Err(());
            }
        }
        self.settle();
        let short = self.draw(amount, false);
        self.debt += short;
        Ok(())
    }
    /// debit(), and what it drew from each lot (by index) and into debt: what a
    /// reversal gives back.
    fn debit_tracked(&mut self, amount: Decimal) -> Result<Drawn, ()> {
        if let Some(limit) = self.limit {
            if self.available() - amount < -limit {
                return Err(());
            }
        }
        self.settle();
        let mut need = amount;
        let mut takes = Vec::new();
        for i in self.order(false) {
            let take = need.min(self.lots[i].remaining);
            if take > Decimal::ZERO {
                self.lots[i].remaining -= take;
                need -= take;
                takes.push((i, take));
            }
        }
        self.debt += need;
        Ok(Drawn { takes, debt: need })
    }
    /// Gives a draw back: to its lots, its debt forgiven while owed, the rest as a new
    /// paid lot.
    fn restore(&mut self, d: &Drawn, seq: u64) {
        for (i, take) in &d.takes {
            self.lots[*i].remaining += *take;
        }
        let forgiven = d.debt.min(self.debt);
        self.debt -= forgiven;
        if d.debt > forgiven {
            self.lots.push(Lot {
                paid: true,
                priority: 100,
                expires: None,
                seq,
                remaining: d.debt - forgiven,
                live: true,
            });
        }
    }
    fn refund(&mut self, amount: Decimal) -> Result<(), ()> {
        let mut w = self.clone();
        w.settle();
        if w.draw(amount, true) > Decimal::ZERO {
            return Err(());
        }
        *self = w;
        Ok(())
    }
}

/// What one debit drew: (lot index, amount) and the part that became debt.
#[derive(Clone, Debug)]
struct Drawn {
    takes: Vec<(usize, Decimal)>,
    debt: Decimal,
}

/// A charged outcome of the model.
struct Outcome {
    key: String,
    customer: usize,
    drawn: Drawn,
    reversal: Option<String>,
}

/// The outcome price of the model's product: 0.05 + 10% of the value, at most 3.
fn outcome_fee(value: Decimal) -> Decimal {
    (Decimal::new(5, 2) + value / Decimal::TEN).min(Decimal::from(3))
}

#[derive(Clone)]
struct Done {
    sql: String,
    txn: String,
}

#[test]
fn random_operations_match_the_model() {
    let seed: u64 = std::env::var("CREDYT_MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261123);
    let steps: usize = std::env::var("CREDYT_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut rng = Rng::new(seed);
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Model");
    let mut c = t.session();
    // Absolute times, so that a replayed request is the identical request.
    let base = text(&mut c, "SELECT now()::text");
    let customers = ["m1", "m2", "m3"];
    for cu in customers {
        c.batch_execute(&format!("SELECT credyt.create_customer('{cu}', '{cu}')")).unwrap();
    }
    let wallets = [("USD", "default"), ("EUR", "default"), ("USD", "credits")];
    let mut model: HashMap<(usize, usize), Wallet> = HashMap::new();
    // A product with a daily seat fee (0.10 a seat) and an outcome price, in USD: each
    // subscription's first period (1 seat) is charged at subscribe.
    c.batch_execute(
        r#"SELECT credyt.create_product('m-agent', 'Agent', '[{"type": "seat",
             "billing_model": {"type": "recurring", "recurring": {"interval": "day"}},
             "pricing": [{"asset": "USD", "values": [{"unit_price": 0.10}]}]},
           {"type": "outcome", "outcome_type": "won", "settlement_window": "P30D",
             "pricing": [{"asset": "USD", "values": [{"unit_price": 0.05, "percent": 10, "max_amount": 3}]}]}]')"#,
    )
    .unwrap();
    let mut subs = Vec::new();
    for (i, cu) in customers.iter().enumerate() {
        subs.push(text(
            &mut c,
            &format!("SELECT credyt.subscribe('{cu}', 'm-agent', starts_at => now() - interval '1 hour')"),
        ));
        model.entry((i, 0)).or_default().debit(Decimal::new(10, 2)).unwrap();
    }
    let mut seats = [1i64; 3];
    let mut outcomes: Vec<Outcome> = Vec::new();
    let (mut reversed, mut prorated) = (0, 0);
    let mut done: Vec<Done> = Vec::new();
    let mut seq = 0u64;
    // Debits decided by a limit, either way: the test must explore both sides.
    let (mut limited_ok, mut limited_rejected) = (0, 0);

    for step in 0..steps {
        let cu = rng.below(3) as usize;
        let wi = rng.below(3) as usize;
        let (asset, name) = wallets[wi];
        let customer = customers[cu];
        let key = format!("s{step}");
        let w = model.entry((cu, wi)).or_default();
        // Amounts of a few units, so that balances random-walk around zero and
        // overdraft limits of a few units decide often.
        let cents = |rng: &mut Rng| Decimal::new(rng.below(1_000) as i64 + 1, 2);
        let fine = |rng: &mut Rng| match rng.below(4) {
            0 => Decimal::new(rng.below(5_000_000_000_000) as i64 + 1, 12),
            1 => Decimal::new(rng.below(50_000) as i64 + 1, 4),
            _ => Decimal::new(rng.below(500) as i64 + 1, 2),
        };
        let op = rng.below(100);
        let ctx = format!("seed {seed} step {step} op {op}");
        // One step in four on the USD default wallet: an outcome, a reversal, a seat change.
        if wi == 0 && rng.below(4) == 0 {
            match rng.below(3) {
                0 => {
                    let value = Decimal::new(rng.below(5_000) as i64, 2);
                    let mut m = w.clone();
                    let sql =
                        format!("SELECT status FROM credyt.record_outcome('{customer}', '{key}', 'won', {value})");
                    match (m.debit_tracked(outcome_fee(value)), c.query_one(sql.as_str(), &[])) {
                        (Ok(drawn), Ok(row)) => {
                            assert_eq!(row.get::<_, String>(0), "charged", "{ctx}");
                            *w = m;
                            outcomes.push(Outcome { key: key.clone(), customer: cu, drawn, reversal: None });
                        }
                        (Err(()), Err(e)) => assert_eq!(sqlstate(&e), "CY402", "{ctx}: {sql}"),
                        (Ok(_), Err(e)) => panic!("{ctx}: {sql} failed: {e}"),
                        (Err(()), Ok(_)) => panic!("{ctx}: expected CY402 from {sql}"),
                    }
                }
                1 => {
                    let mine: Vec<usize> = (0..outcomes.len()).filter(|&i| outcomes[i].customer == cu).collect();
                    let Some(&i) = mine.get(rng.below(mine.len().max(1) as u64) as usize) else { continue };
                    let o = &mut outcomes[i];
                    let got = text(&mut c, &format!("SELECT credyt.reverse_outcome('{}')", o.key));
                    match &o.reversal {
                        Some(first) => assert_eq!(&got, first, "{ctx}: a second reversal is the first"),
                        None => {
                            seq += 1;
                            w.restore(&o.drawn, seq);
                            o.reversal = Some(got);
                            reversed += 1;
                        }
                    }
                }
                _ => {
                    let q = match rng.below(2) {
                        0 => seats[cu] + 1 + rng.below(2) as i64,
                        _ => rng.below(seats[cu] as u64 + 1) as i64,
                    };
                    // the rest of today's period (it began an hour before the test) for the added seats
                    let added = Decimal::from((q - seats[cu]).max(0));
                    let full = Decimal::new(10, 2) * added;
                    let sum =
                        "SELECT coalesce(sum(amount), 0) FROM credyt.subscription_charges WHERE subscription_id = $1";
                    let before: Decimal = c.query_one(sum, &[&subs[cu]]).unwrap().get(0);
                    let billed: i32 = match c.query_one("SELECT credyt.set_seats($1, $2)", &[&subs[cu], &(q as i32)]) {
                        Ok(row) => row.get(0),
                        Err(e) => {
                            // past the limit with even the least the rest of the period can cost
                            assert_eq!(sqlstate(&e), "CY402", "{ctx}");
                            assert!(w.limit.is_some_and(|l| w.available() - full < -l), "{ctx}: {e}");
                            continue;
                        }
                    };
                    if let (Some(l), true) = (w.limit, added > Decimal::ZERO) {
                        assert!(w.available() - full * Decimal::new(9, 1) >= -l, "{ctx}: expected CY402");
                    }
                    assert_eq!(billed as i64, q, "{ctx}");
                    let after: Decimal = c.query_one(sum, &[&subs[cu]]).unwrap().get(0);
                    let charged = after - before;
                    assert!(
                        charged <= full && (charged > full * Decimal::new(9, 1)) == (added > Decimal::ZERO),
                        "{ctx}: {charged} for {added} seats"
                    );
                    assert!(added > Decimal::ZERO || charged.is_zero(), "{ctx}: a decrease charged {charged}");
                    seats[cu] = seats[cu].max(q);
                    if charged > Decimal::ZERO {
                        w.debit(charged).unwrap();
                        prorated += 1;
                    }
                }
            }
            let got: Decimal = c.query_one("SELECT credyt.balance($1, 'USD')", &[&customer]).unwrap().get(0);
            assert_eq!(got, model[&(cu, wi)].available(), "{ctx}: balance after a fee operation");
            continue;
        }
        // (sql, expected outcome: Ok(model after) or Err(sqlstate))
        let (sql, expect): (String, Result<Wallet, &str>) = match op {
            0..=14 => {
                let a = cents(&mut rng);
                let mut m = w.clone();
                seq += 1;
                m.credit(Lot { paid: true, priority: 100, expires: None, seq, remaining: a, live: true });
                (format!("SELECT credyt.adjust('{customer}', '{key}', '{asset}', {a}, 'external_topup', account_name => '{name}')"), Ok(m))
            }
            15..=27 => {
                let a = fine(&mut rng);
                let days = if rng.below(2) == 0 { None } else { Some(rng.below(60) + 1) };
                let future = rng.below(10) == 0;
                let mut m = w.clone();
                seq += 1;
                m.credit(Lot {
                    paid: false,
                    priority: 10,
                    expires: days.map(|d| (d, seq)),
                    seq,
                    remaining: a,
                    live: !future,
                });
                let exp = days
                    .map(|d| format!(", expires_at => '{base}'::timestamptz + interval '{d} days'"))
                    .unwrap_or_default();
                let eff = if future {
                    format!(", effective_at => '{base}'::timestamptz + interval '12 hours'")
                } else {
                    String::new()
                };
                (format!("SELECT credyt.adjust('{customer}', '{key}', '{asset}', {a}, 'gift', account_name => '{name}'{exp}{eff})"), Ok(m))
            }
            28..=64 => {
                let a = fine(&mut rng);
                let mut m = w.clone();
                let r = m.debit(a).map(|_| m).map_err(|_| "CY402");
                (format!("SELECT credyt.charge('{customer}', '{key}', '{asset}', {a}, account_name => '{name}')"), r)
            }
            65..=71 => {
                let a = cents(&mut rng) / Decimal::from(4);
                let a = a.round_dp(2).max(Decimal::new(1, 2));
                let mut m = w.clone();
                let r = m.refund(a).map(|_| m).map_err(|_| "CY402");
                (format!("SELECT credyt.adjust('{customer}', '{key}', '{asset}', -{a}, 'external_refund', account_name => '{name}')"), r)
            }
            72..=77 => {
                let a = fine(&mut rng);
                let mut m = w.clone();
                let r = m.debit(a).map(|_| m).map_err(|_| "CY402");
                (format!("SELECT credyt.adjust('{customer}', '{key}', '{asset}', -{a}, 'other', account_name => '{name}')"), r)
            }
            78..=85 => {
                let limit = match rng.below(3) {
                    0 => None,
                    _ => Some(Decimal::new(rng.below(500) as i64, 2)),
                };
                let mut m = w.clone();
                m.limit = limit;
                let l = limit.map(|l| l.to_string()).unwrap_or_else(|| "NULL".into());
                (format!("SELECT credyt.set_overdraft('{customer}', '{asset}', {l}, '{name}')::text"), Ok(m))
            }
            86..=93 if !done.is_empty() => {
                // Replay: same request, same transaction, nothing changes.
                let d = done[rng.below(done.len() as u64) as usize].clone();
                let got = text(&mut c, &d.sql);
                assert_eq!(got, d.txn, "{ctx}: replay of {}", d.sql);
                continue;
            }
            _ if !done.is_empty() => {
                // Reuse of a key with another payload.
                let d = done[rng.below(done.len() as u64) as usize].clone();
                let altered = format!("{}, description => 'altered')", &d.sql[..d.sql.len() - 1]);
                assert_eq!(fails(&mut c, &altered), "CY409", "{ctx}: {altered}");
                continue;
            }
            _ => continue,
        };
        if w.limit.is_some() && (sql.contains("credyt.charge") || sql.contains("'other'")) {
            match &expect {
                Ok(_) => limited_ok += 1,
                Err(_) => limited_rejected += 1,
            }
        }
        match (c.query_one(sql.as_str(), &[]), expect) {
            (Ok(row), Ok(m)) => {
                *model.get_mut(&(cu, wi)).unwrap() = m;
                if !sql.contains("set_overdraft") {
                    done.push(Done { sql: sql.clone(), txn: row.get::<_, String>(0) });
                }
            }
            (Err(e), Err(code)) => assert_eq!(sqlstate(&e), code, "{ctx}: {sql}"),
            (Ok(_), Err(code)) => panic!("{ctx}: expected {code} from {sql}"),
            (Err(e), Ok(_)) => panic!("{ctx}: {sql} failed: {e}"),
        }
        let got: Decimal =
            c.query_one("SELECT credyt.balance($1, $2, $3)", &[&customer, &asset, &name]).unwrap().get(0);
        assert_eq!(got, model[&(cu, wi)].available(), "{ctx}: balance after {sql}");
    }

    // Lot remainders per wallet, as multisets.
    for ((cu, wi), w) in &model {
        let (asset, name) = wallets[*wi];
        let mut want: Vec<Decimal> = w.lots.iter().map(|l| l.remaining.normalize()).collect();
        want.sort();
        let mut got: Vec<Decimal> = c
            .query(
                "SELECT remaining FROM credyt.lots l JOIN credyt.customers cu ON cu.id = l.customer_id \
                 WHERE cu.external_id = $1 AND l.account_id = $2",
                &[&customers[*cu], &format!("{name}:{asset}")],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, Decimal>(0).normalize())
            .collect();
        got.sort();
        assert_eq!(got, want, "lots of {} {name}:{asset}", customers[*cu]);
    }
    let problems = ledger_problems(&mut c);
    assert!(problems.is_empty(), "verify_ledger: {problems:?}");
    assert!(done.len() > steps / 2, "too few successful operations: {}", done.len());
    assert!(reversed > 10 && prorated > 10, "fees were not exercised: {reversed} reversals, {prorated} seat increases");
    assert!(
        limited_ok > steps / 50 && limited_rejected > steps / 50,
        "limits were not exercised: {limited_ok} debits within a limit, {limited_rejected} rejected"
    );
}
