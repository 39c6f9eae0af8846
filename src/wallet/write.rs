//! Writing a planned book: one wallet in one statement, or a batch's wallets together.

use super::*;

/// The lots drawn ($10, $11) and the wallet row saved, as CTEs `drawn` and `saved`.
/// `$bounds` is more of the lots' condition: lot_bounds!() on one node.
macro_rules! drawn_update {
    ($bounds:expr) => {
        concat!(
        "drawn AS ( \
           UPDATE credyt.lot l SET remaining = l.remaining - ($11::numeric[])[array_position($10::text[], l.id)], \
             spent = l.remaining = ($11::numeric[])[array_position($10::text[], l.id)] \
           WHERE l.customer_id = $3 AND l.id = ANY($10::text[]) ",
            $bounds,
            " RETURNING 1), \
         saved AS ( \
           UPDATE credyt.wallet_account SET balance = $12, debt = $13, threshold_armed = $16, live = $18, held = $19, \
             fresh_until = $20, updated_at = now() \
           WHERE customer_id = $3 AND name = $14 AND asset = $4 RETURNING 1) "
        )
    };
}
/// The one lot a draw names ($n, its id) as index conditions beside `id = ANY`: a kept
/// generic plan that expects one lot per customer probes the primary key (customer_id,
/// id) by the customer alone and filters the ids, which reads every lot the customer
/// ever had, spent ones too. With the id as a range of one, a one-lot draw (the usual
/// one) reads one index entry; a draw of several lots runs the statement without it.
/// (A range, not `id = $n`, so that both forms keep the same shape of plan; equal
/// bounds select the same rows under any deterministic collation.)
#[macro_export]
macro_rules! lot_bounds {
    ($n:literal) => {
        concat!("AND l.id >= ", $n, "::text AND l.id <= ", $n, "::text")
    };
}

/// The entries of a book ($1 to $9), on one node.
macro_rules! entries_insert {
    () => {
        "INSERT INTO credyt.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind) \
         SELECT $1, $2, $3, u.system, u.ledger_name, $4, u.amount, u.lot_id, u.kind \
         FROM unnest($5::bool[], $6::text[], $7::numeric[], $8::text[], $9::text[]) \
           AS u(system, ledger_name, amount, lot_id, kind) RETURNING 1"
    };
}

/// One node: lots, entries, wallet and the balance push in one statement.
/// ($21: the lot drawn when it is only one, see lot_bounds!; WRITE_MANY draws several)
macro_rules! write_sql {
    ($bounds:expr) => {
        concat!(
            "WITH ",
            drawn_update!($bounds),
            ", lines AS (",
            entries_insert!(),
            ") SELECT (SELECT count(*) FROM drawn) AS drawn, (SELECT count(*) FROM lines) AS lines, \
                    (SELECT count(*) FROM saved) AS saved, \
                    CASE WHEN $15::text IS NOT NULL THEN pg_notify($17, $15) END IS NULL AS notified"
        )
    };
}
const WRITE: &str = write_sql!(lot_bounds!("$21"));
const WRITE_MANY: &str = write_sql!("AND $21::text IS NULL");
/// On Citus, an INSERT inside a CTE runs as a subplan whose result is sent to every
/// worker, and an INSERT from a SELECT of no shard is copied in through the coordinator:
/// both commit in two phases on every worker. So there the entries take their ids from
/// the coordinator's sequence first ($21, a local statement), then go in from a SELECT
/// of the customer's wallet row (pushed down whole to its shard: no volatile function,
/// the time the coordinator's, $22); the lots and the wallet follow in an UPDATE-only
/// statement routed to the same shard, and the balance push runs on the coordinator.
const ENTRY_IDS: &str = "SELECT ARRAY(SELECT nextval('credyt.entry_id_seq') FROM generate_series(1, $1)) AS ids";
const WRITE_ENTRIES: &str =
    "INSERT INTO credyt.entry (id, account_id, txn_id, customer_id, system, ledger_name, asset, amount, \
       lot_id, kind, created_at) OVERRIDING SYSTEM VALUE \
     SELECT u.id, $1, $2, w.customer_id, u.system, u.ledger_name, $4, u.amount, u.lot_id, u.kind, $22 \
     FROM credyt.wallet_account w, \
       unnest($21::bigint[], $5::bool[], $6::text[], $7::numeric[], $8::text[], $9::text[]) \
         AS u(id, system, ledger_name, amount, lot_id, kind) \
     WHERE w.customer_id = $3 AND w.name = $14 AND w.asset = $4 RETURNING 1";
const WRITE_SAVED: &str = concat!(
    "WITH ",
    drawn_update!(""),
    "SELECT (SELECT count(*) FROM drawn) AS drawn, (SELECT count(*) FROM saved) AS saved"
);
const PUSH: &str = "SELECT pg_notify($1, $2) IS NULL AS notified";
/// Writes lot remainders, the entries and the wallet row in one statement (on Citus,
/// three routed to the customer's shard), with the balance push when `notify` carries
/// the available balance afterwards.
///
/// Lots are matched with `id = ANY(...)`, which a kept generic plan serves from the
/// primary key (a join to unnest() would be planned as a scan of the lot table).
pub fn write(c: &mut SpiClient<'_>, wallet: &Wallet, book: Book, notify: Option<Decimal>) -> Result<()> {
    let w = book.wallet_ref;
    debug_assert!(
        book.legs.iter().map(|l| l.amount).sum::<Decimal>().is_zero(),
        "transaction {} does not sum to zero",
        book.txn_id
    );
    debug_assert!(wallet.debt >= Decimal::ZERO);
    let txn_id = book.txn_id.clone();
    let BookColumns { take_ids, takes, legs } = book.columns();
    let (write_sql, one_id) = one_lot(&take_ids, WRITE, WRITE_MANY);
    let expected = (take_ids.len() as i64, legs.amount.len() as i64, 1);
    let payload = match notify {
        Some(available) if wallet.push.is_some() => Some(balance_payload(w, available)),
        _ => None,
    };
    let mut args = vec![
        w.account.into(),
        txn_id.as_str().into(),
        w.customer.into(),
        w.asset.into(),
        legs.system.into(),
        legs.name.into(),
        legs.amount.into(),
        legs.lot.into(),
        legs.kind.into(),
        take_ids.into(),
        takes.into(),
        to_numeric(wallet.balance).into(),
        to_numeric(wallet.debt).into(),
        w.name.into(),
        payload.clone().into(),
        wallet.armed.into(),
        wallet.push.as_deref().into(),
        to_numeric(wallet.live).into(),
        to_numeric(wallet.held).into(),
        at_time(wallet.fresh_until)?.into(),
    ];
    let counts = if crate::distributed::active() {
        let ids = one::<Vec<i64>>(c, ENTRY_IDS, &[expected.1.into()])?.unwrap_or_default();
        args.extend([ids.into(), pgrx::datetime::now().into()]);
        let lines = run(c, WRITE_ENTRIES, &args)?.len() as i64;
        let row = run(c, WRITE_SAVED, &args)?.first();
        let counts = (row.req::<i64>("drawn")?, lines, row.req::<i64>("saved")?);
        if let (Some(payload), Some(channel)) = (payload, wallet.push.as_deref()) {
            run(c, PUSH, &[channel.into(), payload.into()])?;
        }
        counts
    } else {
        args.push(one_id.into());
        let t = run(c, write_sql, &args)?;
        let row = t.first();
        (row.req::<i64>("drawn")?, row.req::<i64>("lines")?, row.req::<i64>("saved")?)
    };
    if counts != expected {
        return Err(CyError::internal(format!("ledger write touched {counts:?} rows, expected {expected:?}")));
    }
    Ok(())
}

/// The statement for a draw of `ids`: `one` (with lot_bounds!) and the lot's id when it
/// draws at most one lot, else `many`.
pub fn one_lot(ids: &[String], one: &'static str, many: &'static str) -> (&'static str, Option<String>) {
    match ids {
        [] => (one, None),
        [id] => (one, Some(id.clone())),
        _ => (many, None),
    }
}

/// A time in Postgres microseconds as a timestamptz.
pub fn time_at(t: i64) -> Result<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(t).map_err(|e| CyError::internal(format!("time {t}: {e:?}")))
}

/// time_at() of a time that may be missing.
pub fn at_time(at: Option<i64>) -> Result<Option<TimestampWithTimeZone>> {
    at.map(time_at).transpose()
}

// ---------------------------------------------------------------------------------
// Many wallets at once (the batch form of record_usage)

pub type WalletKey = (String, String);

/// Locks the `default` wallet accounts of `keys` (customer, asset), creating missing
/// ones, in one sorted order, and reads their live lots: three statements in all.
pub fn lock_many(
    c: &mut SpiClient<'_>,
    account: &str,
    keys: &std::collections::BTreeSet<WalletKey>,
) -> Result<BTreeMap<WalletKey, (Wallet, Vec<LiveLot>)>> {
    let mut state = BTreeMap::new();
    if keys.is_empty() {
        return Ok(state);
    }
    let customers: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let assets: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
    let names = vec!["default".to_string(); keys.len()];
    run_once(c, ENSURE_WALLETS, &[account.into(), customers.clone().into(), names.into(), assets.clone().into()])?;
    let t = run_once(
        c,
        concat!(
            "SELECT w.customer_id, w.asset, ",
            wallet_columns!(),
            "FROM ",
            wallet_source!(),
            "JOIN unnest($1::text[], $2::text[]) AS u(c, a) \
               ON w.customer_id = u.c AND w.name = 'default' AND w.asset = u.a \
             WHERE w.customer_id = ANY($1::text[]) ORDER BY w.customer_id, w.asset FOR UPDATE OF w"
        ),
        &[customers.clone().into(), assets.clone().into()],
    )?;
    for row in t {
        let key = (row.req::<String>("customer_id")?, row.req::<String>("asset")?);
        let wallet = wallet_row(&row)?;
        state.insert(key, (wallet, Vec::new()));
    }
    let t = run_once(
        c,
        concat!(
            "SELECT l.customer_id, l.asset, ",
            lot_columns!(),
            "FROM credyt.lot l JOIN unnest($1::text[], $2::text[]) AS u(c, a) \
               ON l.customer_id = u.c AND l.wallet_name = 'default' AND l.asset = u.a \
             WHERE l.customer_id = ANY($1::text[]) AND ",
            live_lot!()
        ),
        &[customers.into(), assets.into()],
    )?;
    for row in t {
        let key = (row.req::<String>("customer_id")?, row.req::<String>("asset")?);
        let lot = live_lot_row(&row)?;
        if let Some(s) = state.get_mut(&key) {
            s.1.push(lot);
        }
    }
    if state.len() != keys.len() {
        return Err(CyError::internal("a wallet account could not be locked"));
    }
    for ((customer, asset), (wallet, _)) in state.iter_mut() {
        freshen(c, &WalletRef { account, customer, name: "default", asset }, wallet)?;
    }
    Ok(state)
}

/// Legs as the columns of an entry insert (arrays for unnest).
#[derive(Default)]
pub struct LegColumns {
    pub system: Vec<bool>,
    pub name: Vec<String>,
    pub amount: Vec<AnyNumeric>,
    pub lot: Vec<Option<String>>,
    pub kind: Vec<String>,
}

/// A book as statement arguments: the lots drawn (ids and amounts) and the legs.
pub struct BookColumns {
    pub take_ids: Vec<String>,
    pub takes: Vec<AnyNumeric>,
    pub legs: LegColumns,
}

impl Book<'_> {
    pub fn columns(self) -> BookColumns {
        let (take_ids, takes) = self.takes.into_iter().map(|(id, t)| (id, to_numeric(t))).unzip();
        let mut legs = LegColumns::default();
        self.legs.into_iter().for_each(|leg| legs.push(leg));
        BookColumns { take_ids, takes, legs }
    }
}

impl LegColumns {
    fn push(&mut self, leg: Leg) {
        self.system.push(leg.system);
        self.name.push(leg.ledger_name);
        self.amount.push(to_numeric(leg.amount));
        self.lot.push(leg.lot_id);
        self.kind.push(leg.kind.to_string());
    }
}

/// The writes of many planned debits, made in one statement per table.
#[derive(Default)]
pub struct BulkWrite {
    txn: Vec<String>,
    customer: Vec<String>,
    asset: Vec<String>,
    legs: LegColumns,
    /// what is drawn from each lot, by (customer, lot id)
    takes: BTreeMap<(String, String), Decimal>,
    /// available after the last debit of each wallet, for the balance push
    last: BTreeMap<WalletKey, Decimal>,
}

impl BulkWrite {
    /// Adds a planned debit (its book) and the wallet's available balance after it.
    pub fn add(&mut self, book: Book, after: Decimal) {
        let w = book.wallet_ref;
        debug_assert!(book.legs.iter().map(|l| l.amount).sum::<Decimal>().is_zero());
        for leg in book.legs {
            self.txn.push(book.txn_id.clone());
            self.customer.push(w.customer.to_string());
            self.asset.push(w.asset.to_string());
            self.legs.push(leg);
        }
        for (id, t) in book.takes {
            *self.takes.entry((w.customer.to_string(), id)).or_default() += t;
        }
        self.last.insert((w.customer.to_string(), w.asset.to_string()), after);
    }

    /// Writes lot remainders, entries and the final state of every wallet in `state`.
    pub fn write(
        self,
        c: &mut SpiClient<'_>,
        account: &str,
        state: &BTreeMap<WalletKey, (Wallet, Vec<LiveLot>)>,
    ) -> Result<()> {
        if !self.takes.is_empty() {
            let (mut customers, mut ids, mut takes) = (Vec::new(), Vec::new(), Vec::new());
            for ((customer, id), t) in self.takes {
                customers.push(customer);
                ids.push(id);
                takes.push(to_numeric(t));
            }
            // (`= ANY($3)`: on Citus, the shards of those customers only)
            run_once(
                c,
                "UPDATE credyt.lot l SET remaining = l.remaining - u.take, spent = l.remaining = u.take \
                 FROM unnest($1::text[], $2::numeric[], $3::text[]) AS u(id, take, c) \
                 WHERE l.customer_id = u.c AND l.id = u.id AND l.customer_id = ANY($3::text[])",
                &[ids.into(), takes.into(), customers.into()],
            )?;
        }
        if !self.txn.is_empty() {
            run_once(
                c,
                "INSERT INTO credyt.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind) \
                 SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::text[], $7::numeric[], \
                                            $8::text[], $9::text[]) AS u",
                &[account.into(), self.txn.into(), self.customer.into(), self.legs.system.into(), self.legs.name.into(),
                  self.asset.into(), self.legs.amount.into(), self.legs.lot.into(), self.legs.kind.into()],
            )?;
        }
        if state.is_empty() {
            return Ok(());
        }
        save_wallets(c, state)?;
        // (one account's wallets: one channel)
        let channel = state.values().find_map(|(wallet, _)| wallet.push.clone());
        if let (Some(channel), false) = (channel, self.last.is_empty()) {
            let payloads: Vec<String> = self
                .last
                .iter()
                .map(|((customer, asset), available)| {
                    balance_payload(&WalletRef { account, customer, name: "default", asset }, *available)
                })
                .collect();
            run_once(c, "SELECT pg_notify($2, x) FROM unnest($1::text[]) AS x", &[payloads.into(), channel.into()])?;
        }
        Ok(())
    }
}

/// Stores the state of a batch's locked wallets in one statement.
fn save_wallets(c: &mut SpiClient<'_>, state: &BTreeMap<WalletKey, (Wallet, Vec<LiveLot>)>) -> Result<()> {
    let mut cs = Vec::new();
    let mut assets = Vec::new();
    let mut balances = Vec::new();
    let mut debts = Vec::new();
    let mut armed = Vec::new();
    let mut live = Vec::new();
    let mut held = Vec::new();
    let mut fresh = Vec::new();
    for ((cust, asset), (wallet, _)) in state {
        cs.push(cust.clone());
        assets.push(asset.clone());
        balances.push(to_numeric(wallet.balance));
        debts.push(to_numeric(wallet.debt));
        armed.push(wallet.armed);
        live.push(to_numeric(wallet.live));
        held.push(to_numeric(wallet.held));
        fresh.push(at_time(wallet.fresh_until)?);
    }
    run_once(
        c,
        "UPDATE credyt.wallet_account w SET balance = u.b, debt = u.d, threshold_armed = u.armed, live = u.live, \
           held = u.held, fresh_until = u.fresh, updated_at = now() \
         FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::bool[], $6::numeric[], $7::numeric[], \
                     $8::timestamptz[]) AS u(c, a, b, d, armed, live, held, fresh) \
         WHERE w.customer_id = u.c AND w.name = 'default' AND w.asset = u.a AND w.customer_id = ANY($1::text[])",
        &[
            cs.into(),
            assets.into(),
            balances.into(),
            debts.into(),
            armed.into(),
            live.into(),
            held.into(),
            fresh.into(),
        ],
    )?;
    Ok(())
}
