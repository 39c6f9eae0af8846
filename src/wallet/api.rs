//! The ledger's SQL-facing functions (SPEC §5).

use super::*;

// ---------------------------------------------------------------------------------
// The API

/// Why an adjustment is made (SPEC §5), parsed once from the argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// a promotion lot
    Gift,
    /// a paid lot, money received elsewhere
    ExternalTopup,
    /// money given back: draws paid lots only
    ExternalRefund,
    /// a paid lot (positive) or a draw like a charge (negative)
    Other,
}

impl Reason {
    const NAMES: &'static str = "gift, external_topup, external_refund, other";

    fn parse(s: &str) -> Option<Reason> {
        match s {
            "gift" => Some(Reason::Gift),
            "external_topup" => Some(Reason::ExternalTopup),
            "external_refund" => Some(Reason::ExternalRefund),
            "other" => Some(Reason::Other),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Reason::Gift => "gift",
            Reason::ExternalTopup => "external_topup",
            Reason::ExternalRefund => "external_refund",
            Reason::Other => "other",
        }
    }
}

impl Reason {
    fn from_arg(reason: Option<String>) -> Result<Reason> {
        validate::vocab("reason", reason, Reason::parse, &format!("reasons: {}", Reason::NAMES))
    }

    /// What an adjustment of this reason and sign does: its lot or its draw, and the
    /// system account on the other side (SPEC §5).
    fn movement(self, amount: Decimal) -> Movement {
        let credit = |purpose, system_account, kind| Movement::Credit { purpose, system_account, kind };
        let debit = |draw, system_account, kind| Movement::Debit(Debit { amount: -amount, draw, system_account, kind });
        match (self, amount > Decimal::ZERO) {
            (Reason::Gift, _) => credit(Purpose::Promotion, "promotions", "gift"),
            (Reason::ExternalTopup, _) => credit(Purpose::Paid, "external", "external_topup"),
            (Reason::Other, true) => credit(Purpose::Paid, "adjustments", "other"),
            (Reason::ExternalRefund, _) => debit(DrawFrom::PaidOnly, "external", "external_refund"),
            (Reason::Other, false) => debit(DrawFrom::AnyLot, "adjustments", "other"),
        }
    }

    /// The sign each reason allows, and the dates only credits take.
    fn check(
        self,
        amount: Decimal,
        effective_at: Option<TimestampWithTimeZone>,
        expires_at: Option<TimestampWithTimeZone>,
    ) -> Result<()> {
        let credit = amount > Decimal::ZERO;
        match (self, credit) {
            (Reason::Gift | Reason::ExternalTopup, false) => {
                return Err(CyError::invalid(format!("amount must be positive for reason {}", self.as_str()))
                    .detail(format!("got {amount}")))
            }
            (Reason::ExternalRefund, true) => {
                return Err(CyError::invalid("amount must be negative for reason external_refund")
                    .detail(format!("got {amount}"))
                    .hint(format!("pass the refund as a negative amount, e.g. -{amount}")))
            }
            _ => {}
        }
        if !credit && (effective_at.is_some() || expires_at.is_some()) {
            return Err(CyError::invalid("effective_at and expires_at apply to credits only")
                .hint("a negative adjustment draws existing lots; it creates none"));
        }
        Ok(())
    }

    /// Money that moved outside credyt is counted in the asset's precision.
    fn check_precision(self, amount: Decimal, asset: &Asset) -> Result<()> {
        if matches!(self, Reason::ExternalTopup | Reason::ExternalRefund) {
            credyt_core::money::check_precision(amount, asset.precision).map_err(|e| {
                CyError::invalid(format!("amount {}", e.describe()))
                    .detail(format!("{} has {} decimal places", asset.code, asset.precision))
            })?;
        }
        Ok(())
    }
}

/// What an adjustment writes.
enum Movement {
    Credit { purpose: Purpose, system_account: &'static str, kind: &'static str },
    Debit(Debit<'static>),
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn adjust(
    customer: Option<String>,
    transaction_id: Option<String>,
    asset: Option<String>,
    amount: Option<AnyNumeric>,
    reason: Option<String>,
    account_name: default!(Option<String>, "'default'"),
    description: default!(Option<String>, "NULL"),
    effective_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    metadata: default!(Option<crate::json::Json>, "'{}'"),
) -> String {
    api(move || {
        let key = validate::key("transaction_id", transaction_id)?;
        let amount = money::non_zero("amount", amount)?;
        let reason = Reason::from_arg(reason)?;
        let name = validate::wallet_name(account_name)?;
        let description = validate::optional_text("description", description)?;
        let metadata = validate::metadata(metadata)?;
        let effective_at = validate::finite("effective_at", effective_at)?;
        let expires_at = validate::finite("expires_at", expires_at)?;
        reason.check(amount, effective_at, expires_at)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let asset: Asset = resolve_asset(c, &account, asset.as_deref())?;
            reason.check_precision(amount, &asset)?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let payload = json!({
                "op": "adjust", "customer": customer, "asset": asset.code, "amount": amount.normalize().to_string(),
                "reason": reason.as_str(), "account_name": name, "description": description,
                "effective_at": micros(effective_at), "expires_at": micros(expires_at), "metadata": metadata,
            });
            let txn =
                match claim(c, &account, "adjust", &key, &customer, payload, description.as_deref(), metadata.clone())?
                {
                    Claim::Replay(id) => return Ok(id),
                    Claim::New(id) => id,
                };
            // Checked once the key is new, so that a replay after expires_at has passed
            // returns the original; the error rolls the claim back.
            validate::expiry_after(effective_at, expires_at)?;
            let w = WalletRef { account: &account, customer: &customer, name: &name, asset: &asset.code };
            match reason.movement(amount) {
                Movement::Credit { purpose, system_account, kind } => {
                    let source = format!("adjust:{}", reason.as_str());
                    let lot = Credit {
                        amount,
                        purpose,
                        priority: purpose.default_priority(),
                        effective_at,
                        expires_at,
                        on_expiry: ExpiryPolicy::Expire,
                        rollover_cap: None,
                        grant_id: None,
                        source: &source,
                        system_account,
                        kind,
                    };
                    credit(c, &w, &txn, lot)?;
                }
                Movement::Debit(d) => {
                    debit(c, &w, &txn, d)?;
                }
            }
            Ok(txn)
        })
    })
}

/// An ad-hoc fee (charge()), validated.
struct Fee<'a> {
    key: &'a str,
    amount: Decimal,
    name: &'a str,
    description: Option<&'a str>,
    metadata: &'a serde_json::Value,
}

impl Fee<'_> {
    /// Claims the transaction_id and debits the locked wallet; a replay returns the
    /// original transaction and writes nothing. The claim comes after the lock: a
    /// concurrent duplicate waits on the wallet, then finds the key taken.
    fn charge(&self, c: &mut SpiClient<'_>, w: &WalletRef, locked: Drawable) -> Result<String> {
        let payload = json!({
            "op": "charge", "customer": w.customer, "asset": w.asset, "amount": self.amount.normalize().to_string(),
            "account_name": self.name, "description": self.description, "metadata": self.metadata,
        });
        let claimed =
            claim(c, w.account, "charge", self.key, w.customer, payload, self.description, self.metadata.clone())?;
        let txn = match claimed {
            Claim::Replay(id) => return Ok(id),
            Claim::New(id) => id,
        };
        let d = Debit { amount: self.amount, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "charge" };
        debit_locked(c, w, &txn, locked, d)?;
        Ok(txn)
    }
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn charge(
    customer: Option<String>,
    transaction_id: Option<String>,
    asset: Option<String>,
    amount: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
    description: default!(Option<String>, "NULL"),
    metadata: default!(Option<crate::json::Json>, "'{}'"),
) -> String {
    api(move || {
        let key = validate::key("transaction_id", transaction_id)?;
        let amount = money::positive("amount", amount)?;
        let name = validate::wallet_name(account_name)?;
        let description = validate::optional_text("description", description)?;
        let metadata = validate::metadata(metadata)?;
        let fee = Fee { key: &key, amount, name: &name, description: description.as_deref(), metadata: &metadata };
        Spi::connect_mut(|c| {
            // The scope, asset and customer from the backend's cache, checked against
            // the generations the wallet lock reads; after catalog changes, read afresh.
            for _ in 0..3 {
                let (account, scope_gen) = crate::scope::scope_cached(c)?;
                let (asset, unit_gen) = crate::assets::resolve_asset_cached(c, &account, asset.as_deref())?;
                let reference = customer.as_deref().ok_or_else(|| CyError::invalid("customer must not be NULL"))?;
                let (cust, id_gen) = customers::resolve_cached(c, &account, reference)?;
                let w = WalletRef { account: &account, customer: &cust, name: &name, asset: &asset.code };
                let locked = lock_to_draw(c, &w, amount, true)?;
                let gens = locked.gens.ok_or_else(|| CyError::internal("no generations read"))?;
                if gens.platform == scope_gen && gens.account == id_gen && unit_gen.is_none_or(|g| g == gens.account) {
                    return fee.charge(c, &w, locked);
                }
                crate::scope::check_scopes(gens.platform);
                customers::check_ids(&account, gens.account);
                crate::assets::check_units(&account, gens.account);
            }
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let w = t.wallet(&name);
            let locked = lock_to_draw(c, &w, amount, false)?;
            fee.charge(c, &w, locked)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_overdraft(
    customer: Option<String>,
    asset: Option<String>,
    limit: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
) {
    api(move || {
        let limit = money::optional_non_negative("limit", limit)?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let w = t.wallet(&name);
            lock(c, &w)?;
            run(
                c,
                "UPDATE credyt.wallet_account SET overdraft_limit = $4, updated_at = now() \
                 WHERE customer_id = $1 AND name = $2 AND asset = $3",
                &[w.customer.into(), w.name.into(), w.asset.into(), limit.map(to_numeric).into()],
            )?;
            Ok(())
        })
    })
}

/// Sets (or, with NULL, removes) the threshold below which available triggers one
/// balance_threshold_hit per downward crossing. Set while already below, it fires at once.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_threshold(
    customer: Option<String>,
    asset: Option<String>,
    threshold: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
) {
    api(move || {
        let threshold = money::optional_signed("threshold", threshold)?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let w = t.wallet(&name);
            let wallet = lock(c, &w)?;
            let now = wallet.available();
            let armed = threshold.is_none_or(|t| now >= t);
            run(
                c,
                "UPDATE credyt.wallet_account SET threshold = $4, threshold_armed = $5, updated_at = now() \
                 WHERE customer_id = $1 AND name = $2 AND asset = $3",
                &[w.customer.into(), w.name.into(), w.asset.into(), threshold.map(to_numeric).into(), armed.into()],
            )?;
            if let (Some(t), false) = (threshold, armed) {
                threshold_hit(c, &w, now, t)?;
            }
            Ok(())
        })
    })
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn balance(
    customer: Option<String>,
    asset: default!(Option<String>, "'USD'"),
    account_name: default!(Option<String>, "'default'"),
) -> AnyNumeric {
    api(move || {
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| Ok(to_numeric(cached_balance(c, customer.as_deref(), asset.as_deref(), &name)?)))
    })
}

/// balance(): the scope, asset and customer from the backend's cache, checked against
/// the generations read in the one statement that reads the wallet row.
fn cached_balance(c: &mut SpiClient<'_>, customer: Option<&str>, asset: Option<&str>, name: &str) -> Result<Decimal> {
    for _ in 0..3 {
        let (account, scope_gen) = crate::scope::scope_cached(c)?;
        let (asset, unit_gen) = crate::assets::resolve_asset_cached(c, &account, asset)?;
        let reference = customer.ok_or_else(|| CyError::invalid("customer must not be NULL"))?;
        let (customer, id_gen) = customers::resolve_cached(c, &account, reference)?;
        let (gens, available) = match balance_row(c, &customer, name, &asset.code)? {
            Some(read) => read,
            None => gens_and_available(c, &account, &customer, name, Some(&asset.code))?,
        };
        if gens.platform == scope_gen && gens.account == id_gen && unit_gen.is_none_or(|g| g == gens.account) {
            return Ok(available.unwrap_or_default());
        }
        crate::scope::check_scopes(gens.platform);
        customers::check_ids(&account, gens.account);
        crate::assets::check_units(&account, gens.account);
    }
    let t = Target::resolve(c, asset, customer)?;
    available_of(c, &t.customer, name, &t.asset.code)
}

/// balance()'s one statement: the wallet row's available and the generations the
/// cached lookups are checked against (the customer's is not needed). None when the
/// wallet account was never used; the fresh figures' fallback sums lots and holds.
fn balance_row(
    c: &mut SpiClient<'_>,
    customer: &str,
    name: &str,
    asset: &str,
) -> Result<Option<(Gens, Option<Decimal>)>> {
    let t = run(
        c,
        concat!(
            "SELECT (w.live - w.debt - w.held)::text AS available, ",
            fresh!(),
            " AS fresh, a.catalog_gen AS account_gen, \
               (SELECT catalog_gen FROM credyt.account WHERE parent_id IS NULL AND environment = 'live') AS platform_gen \
             FROM ",
            wallet_source!(),
            "WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
        ),
        &[customer.into(), name.into(), asset.into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    let row = t.first();
    let gens =
        Gens { platform: row.req::<i64>("platform_gen")?, account: row.req::<i64>("account_gen")?, customer: -1 };
    let available = match row.req::<bool>("fresh")? {
        true => available_row(&row)?,
        false => available_of(c, customer, name, asset)?,
    };
    Ok(Some((gens, Some(available))))
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn balance_at(
    customer: Option<String>,
    asset: Option<String>,
    at: Option<TimestampWithTimeZone>,
    account_name: default!(Option<String>, "'default'"),
) -> AnyNumeric {
    api(move || {
        let at = validate::required("at", at)?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let (customer, asset) = (t.customer, t.asset);
            let v = one::<String>(
                c,
                "SELECT coalesce(sum(amount), 0)::text FROM credyt.entry \
                 WHERE customer_id = $1 AND ledger_name = $2 AND asset = $3 AND NOT system AND created_at <= $4",
                &[customer.as_str().into(), name.as_str().into(), asset.code.as_str().into(), at.into()],
            )?;
            Ok(to_numeric(stored(&v.unwrap_or_else(|| "0".into()))?))
        })
    })
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn wallet(
    customer: Option<String>,
) -> TableIterator<
    'static,
    (
        name!(account_id, String),
        name!(name, String),
        name!(asset, String),
        name!(available, AnyNumeric),
        name!(pending_in, AnyNumeric),
        name!(pending_out, AnyNumeric),
    ),
> {
    let rows = api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let t = run(
                c,
                concat!(
                    "SELECT w.name, w.asset, ",
                    available_columns!("$1"),
                    ", (CASE WHEN ",
                    fresh!(),
                    " THEN w.held ELSE ",
                    held_sum!("$1"),
                    " END)::text AS held, (SELECT coalesce(sum(p.amount), 0) FROM credyt.topup p WHERE p.customer_id = $1 \
                       AND p.wallet_name = w.name AND p.asset = w.asset AND p.status = 'pending')::text AS pending \
                     FROM credyt.wallet_account w WHERE w.customer_id = $1 ORDER BY w.name, w.asset"
                ),
                &[customer.as_str().into()],
            )?;
            let mut rows = Vec::new();
            for row in t {
                let name = row.req::<String>("name")?;
                let asset = row.req::<String>("asset")?;
                let avail = available_row(&row)?;
                let held = row.amount("held")?;
                let pending_in = row.amount("pending")?;
                rows.push((format!("{name}:{asset}"), name, asset, avail, held, pending_in));
            }
            Ok(rows)
        })
    });
    TableIterator::new(rows.into_iter().map(|(id, name, asset, avail, held, pending_in)| {
        (id, name, asset, to_numeric(avail), to_numeric(pending_in), to_numeric(held))
    }))
}
