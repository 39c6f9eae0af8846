//! A custom unit's exchange rates over time (add_asset_rate) and quotes at a moment
//! (quote_asset).

use super::*;
use crate::assets::rate_at;
use pgrx::iter::TableIterator;
use rust_decimal::Decimal;

/// A custom unit of the account, locked (rates of one asset change one at a time).
fn lock_custom_asset(c: &mut SpiClient<'_>, account: &str, asset: Option<&str>) -> Result<(String, u32)> {
    let code = asset.ok_or_else(|| CyError::invalid("asset must not be NULL"))?;
    if fiat(code).is_some() {
        return Err(CyError::conflict(format!("{code} is an ISO 4217 currency: it has no rates of its own")));
    }
    let precision = one::<i32>(
        c,
        "SELECT precision FROM credyt.asset WHERE account_id = $1 AND code = $2 FOR UPDATE",
        &[account.into(), code.into()],
    )?
    .ok_or_else(|| resolve_asset(c, account, Some(code)).err().unwrap_or_else(|| CyError::not_found(code)))?;
    Ok((code.to_string(), precision as u32))
}

/// The source of a rate: a fiat currency.
fn source_currency(source: Option<String>) -> Result<String> {
    let source = validate::required("source", source)?;
    if fiat(&source).is_none() {
        return Err(CyError::invalid(format!("source {source} is not an ISO 4217 currency"))
            .hint("rates are what one unit costs in a currency, e.g. 'USD'"));
    }
    Ok(source)
}

/// Adds a rate: one unit of `asset` costs `rate` of `source` from `valid_from` (now
/// by default) until `valid_to` (open by default). The rate in effect at `valid_from`
/// ends there (and resumes after `valid_to` if it ran past it); a rate that starts
/// inside the new one's span is a conflict.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn add_asset_rate(
    asset: Option<String>,
    source: Option<String>,
    rate: Option<AnyNumeric>,
    valid_from: default!(Option<TimestampWithTimeZone>, "now()"),
    valid_to: default!(Option<TimestampWithTimeZone>, "NULL"),
) {
    api(move || {
        let source = source_currency(source)?;
        let rate = money::positive("rate", rate)?;
        let valid_from = validate::required_time("valid_from", valid_from)?;
        let valid_to = validate::finite("valid_to", valid_to)?;
        if valid_to.is_some_and(|to| to.into_inner() <= valid_from.into_inner()) {
            return Err(CyError::invalid("valid_to must be later than valid_from"));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let (code, _) = lock_custom_asset(c, &account, asset.as_deref())?;
            insert_rate(c, &account, &code, &source, rate, valid_from, valid_to)
        })
    })
}

/// Inserts a rate of one (asset, source) that is locked: a rate starting inside its
/// span is a conflict; the rate in effect at its start ends there and, if it ran past
/// its end, resumes then.
fn insert_rate(
    c: &mut SpiClient<'_>,
    account: &str,
    code: &str,
    source: &str,
    rate: Decimal,
    valid_from: TimestampWithTimeZone,
    valid_to: Option<TimestampWithTimeZone>,
) -> Result<()> {
    let clash = one::<TimestampWithTimeZone>(
        c,
        "SELECT valid_from FROM credyt.asset_rate WHERE account_id = $1 AND asset = $2 AND source = $3 \
           AND valid_from >= $4 AND ($5::timestamptz IS NULL OR valid_from < $5) ORDER BY valid_from LIMIT 1",
        &[account.into(), code.into(), source.into(), valid_from.into(), valid_to.into()],
    )?;
    if let Some(at) = clash {
        return Err(CyError::conflict(format!("a rate of {code} in {source} already starts at {at} within that span"))
            .hint("rates of one asset and source never overlap: end the new rate before it (valid_to)"));
    }
    let t = run(
        c,
        "UPDATE credyt.asset_rate r SET valid_to = $4 FROM (SELECT valid_from, valid_to FROM credyt.asset_rate \
           WHERE account_id = $1 AND asset = $2 AND source = $3 AND valid_from < $4 \
             AND (valid_to IS NULL OR valid_to > $4) FOR UPDATE) old \
         WHERE r.account_id = $1 AND r.asset = $2 AND r.source = $3 AND r.valid_from = old.valid_from \
         RETURNING old.valid_to AS old_to, r.rate::text AS old_rate",
        &[account.into(), code.into(), source.into(), valid_from.into()],
    )?;
    let resumes = if t.is_empty() {
        None
    } else {
        let row = t.first();
        Some((row.opt::<TimestampWithTimeZone>("old_to")?, row.req::<String>("old_rate")?))
    };
    run(
        c,
        "INSERT INTO credyt.asset_rate (account_id, asset, source, valid_from, valid_to, rate) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[account.into(), code.into(), source.into(), valid_from.into(), valid_to.into(), to_numeric(rate).into()],
    )?;
    if let (Some(new_to), Some((old_to, old_rate))) = (valid_to, resumes) {
        run(
            c,
            "INSERT INTO credyt.asset_rate (account_id, asset, source, valid_from, valid_to, rate) \
             SELECT $1, $2, $3, $4, $5, $6::numeric WHERE $5::timestamptz IS NULL OR $5 > $4",
            &[account.into(), code.into(), source.into(), new_to.into(), old_to.into(), old_rate.as_str().into()],
        )?;
    }
    Ok(())
}

/// What `amount` of `source` buys of `asset` at `at` (now by default; past moments
/// use the rate then): amount / rate, rounded down to the asset's precision, so that
/// a quote never promises a fraction of a unit that was not paid for.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn quote_asset(
    asset: Option<String>,
    source: Option<String>,
    amount: Option<AnyNumeric>,
    at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> TableIterator<
    'static,
    (
        name!(source, String),
        name!(source_amount, AnyNumeric),
        name!(asset, String),
        name!(amount, AnyNumeric),
        name!(rate, AnyNumeric),
        name!(inverse_rate, AnyNumeric),
    ),
> {
    api(move || {
        let source = source_currency(source)?;
        let amount = money::positive("amount", amount)?;
        let at = validate::required_time("at", at)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let a = resolve_asset(c, &account, asset.as_deref())?;
            let rate = rate_at(c, &account, &a.code, &source, at)?.ok_or_else(|| {
                CyError::not_found(format!("{} has no rate in {source} at {at}", a.code))
                    .hint("add one with credyt.add_asset_rate()")
            })?;
            let bought = (amount / rate).round_dp_with_strategy(a.precision, rust_decimal::RoundingStrategy::ToZero);
            let inverse = (Decimal::ONE / rate).round_dp(12).normalize();
            Ok(TableIterator::once((
                source,
                to_numeric(amount),
                a.code,
                to_numeric(bought),
                to_numeric(rate.normalize()),
                to_numeric(inverse),
            )))
        })
    })
}
