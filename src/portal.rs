//! The billing portal's grants: one customer of one account, for a while. A grant is
//! made with an API key's (or a bound role's) rights and used by credyt-server without
//! one: authenticate_portal checks its secret and puts its account in scope, confined to
//! its customer (customers::resolve refuses any other), until the transaction ends.

use crate::error::{api, Code, CyError, Result};
use crate::scope::{scope, KEY_ACCOUNT, PORTAL_CUSTOMER};
use crate::spi::{one, run, Row};
use crate::validate;
use credyt_core::apikey::hash_key;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

static PORTAL_CUSTOMER_SETTING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init_gucs() {
    GucRegistry::define_string_guc(
        PORTAL_CUSTOMER,
        c"The one customer a billing portal session may reach in this transaction (set by credyt.authenticate_portal).",
        c"Only a superuser can set it: credyt.authenticate_portal runs as the extension's owner.",
        &PORTAL_CUSTOMER_SETTING,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL | GucFlags::SUPERUSER_ONLY,
    );
}

/// A required http(s) URL argument.
fn required_url(param: &str, v: Option<String>) -> Result<String> {
    validate::required(param, validate::optional_url(param, v)?)
}

/// A portal grant for `customer` of the account in scope: (id, secret, expires_at).
/// The secret is shown once; `ttl` is the longest the portal session may last (an
/// hour by default, 5 minutes to 24 hours).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_portal_grant(
    customer: Option<String>,
    return_url: Option<String>,
    failure_url: Option<String>,
    ttl: default!(Option<pgrx::datum::Interval>, "'1 hour'"),
) -> TableIterator<'static, (name!(grant_id, String), name!(secret, String), name!(expires_at, TimestampWithTimeZone))>
{
    api(move || {
        let (return_url, failure_url) =
            (required_url("return_url", return_url)?, required_url("failure_url", failure_url)?);
        let ttl = validate::required("ttl", ttl)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = crate::customers::resolve(c, &account, customer.as_deref())?;
            let ok = one::<bool>(c, "SELECT $1 BETWEEN interval '5 minutes' AND interval '24 hours'", &[ttl.into()])?;
            if ok != Some(true) {
                return Err(CyError::invalid("ttl must be from 5 minutes to 24 hours"));
            }
            let mut random = [0u8; 32];
            crate::ids::strong_random(&mut random)?;
            let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
            let id = crate::ids::new_id("prt")?;
            let expires = one::<TimestampWithTimeZone>(
                c,
                "INSERT INTO credyt.portal_grant (account_id, id, customer_id, secret_hash, return_url, failure_url, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now() + $7) RETURNING expires_at",
                &[account.as_str().into(), id.as_str().into(), customer.as_str().into(), hash_key(&secret).as_str().into(),
                  return_url.as_str().into(), failure_url.as_str().into(), ttl.into()],
            )?
            .ok_or_else(|| CyError::internal("portal grant vanished"))?;
            Ok(TableIterator::once((id, secret, expires)))
        })
    })
}

/// Checks a portal grant and serves its account, confined to its customer, until the
/// transaction ends: (customer_id, return_url). Unknown, wrong or expired: CY401, the
/// same for each.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn authenticate_portal(
    grant_id: Option<String>,
    secret: Option<String>,
) -> TableIterator<'static, (name!(customer_id, String), name!(return_url, String))> {
    api(move || {
        let refused = || CyError::new(Code::Unauthenticated, "invalid or expired portal session");
        let (id, secret) = (grant_id.ok_or_else(refused)?, secret.ok_or_else(refused)?);
        Spi::connect_mut(|c| {
            let t = run(
                c,
                "SELECT account_id, customer_id, return_url FROM credyt.portal_grant \
                 WHERE id = $1 AND secret_hash = $2 AND expires_at > now()",
                &[id.as_str().into(), hash_key(&secret).as_str().into()],
            )?;
            if t.is_empty() {
                return Err(refused());
            }
            let row = t.first();
            let (account, customer, back) =
                (row.req::<String>("account_id")?, row.req::<String>("customer_id")?, row.req::<String>("return_url")?);
            run(
                c,
                "SELECT set_config($1, $2, true), set_config($3, $4, true)",
                &[
                    KEY_ACCOUNT.to_str().unwrap_or_default().into(),
                    account.as_str().into(),
                    PORTAL_CUSTOMER.to_str().unwrap_or_default().into(),
                    customer.as_str().into(),
                ],
            )?;
            Ok(TableIterator::once((customer, back)))
        })
    })
}

/// Where a portal link that cannot be used (expired, or its signature tampered with)
/// sends its holder: the failure_url of the grant it names, when it also carries that
/// grant's secret (expired or not); else NULL. Nothing else about the grant.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn portal_failure_url(grant_id: Option<String>, secret: Option<String>) -> Option<String> {
    api(move || {
        let (Some(id), Some(secret)) = (grant_id, secret) else { return Ok(None) };
        Spi::connect_mut(|c| {
            one::<String>(
                c,
                "SELECT failure_url FROM credyt.portal_grant WHERE id = $1 AND secret_hash = $2",
                &[id.as_str().into(), hash_key(&secret).as_str().into()],
            )
        })
    })
}
