//! The account in scope (SPEC §3): from the role's binding and the `credyt.account`
//! setting; the platform account; the account tree. A leaf: imports no domain.
//!
//! The API runs SECURITY DEFINER as the extension owner, which bypasses row-level
//! security, so every API statement filters by the account in scope explicitly;
//! RLS is the second wall, for what application roles read directly.

use crate::error::{CyError, Result};
use crate::spi::{one, run, Row};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// The platform account: the live account without a parent.
pub fn platform(c: &mut SpiClient<'_>) -> Result<String> {
    one::<String>(c, "SELECT id FROM credyt.account WHERE parent_id IS NULL AND environment = 'live'", &[])?
        .ok_or_else(|| CyError::internal("the platform account is missing"))
}

/// A text setting, if set to something non-empty.
fn setting(name: &std::ffi::CStr) -> Option<String> {
    let p = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if p.is_null() {
        return None;
    }
    let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The setting `credyt.account`, if set to something non-empty.
fn account_setting() -> Option<String> {
    setting(c"credyt.account")
}

/// The account an API key authenticated in this transaction (credyt.authenticate sets
/// it; only a superuser can, so a server role cannot set it itself).
pub const KEY_ACCOUNT: &std::ffi::CStr = c"credyt.key_account";

/// What the account in scope is decided from, read in one statement: the binding of
/// the role in effect (after SET ROLE), else of the session user, so that a bound
/// login that SETs ROLE to an unbound role stays confined; the platform account; and
/// whether the `credyt.account` setting names an existing account.
struct ScopeFacts {
    bound: Option<String>,
    server: bool,
    platform: String,
    setting_exists: bool,
    /// the platform row's catalog generation (role bindings: crate::cache)
    platform_gen: i64,
}

fn scope_facts(c: &mut SpiClient<'_>, setting: Option<&str>) -> Result<ScopeFacts> {
    let outer = unsafe { pg_sys::GetOuterUserId() };
    let session = unsafe { pg_sys::GetSessionUserId() };
    macro_rules! facts {
        ($binding:literal) => {
            concat!(
                "SELECT b.account_id AS bound, coalesce(b.server, false) AS server, \
                        (SELECT id FROM credyt.account WHERE parent_id IS NULL AND environment = 'live') AS platform, \
                        EXISTS (SELECT 1 FROM credyt.account WHERE id = $3) AS setting_exists, \
                        (SELECT catalog_gen FROM credyt.account WHERE parent_id IS NULL AND environment = 'live') \
                          AS platform_gen \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT account_id, server FROM credyt.role_binding ",
                $binding,
                " LIMIT 1) b ON true"
            )
        };
    }
    const BY_OID: &str = facts!("WHERE role_oid = $1 OR role_oid = $2 ORDER BY role_oid = $1 DESC");
    // (a Citus worker: the same roles under other OIDs)
    const BY_NAME: &str = facts!(
        "WHERE role_name IN (pg_catalog.pg_get_userbyid($1), pg_catalog.pg_get_userbyid($2)) \
         ORDER BY role_name = pg_catalog.pg_get_userbyid($1) DESC"
    );
    let sql = if crate::distributed::on_worker(c)? { BY_NAME } else { BY_OID };
    let t = run(c, sql, &[outer.into(), session.into(), setting.into()])?;
    let row = t.first();
    Ok(ScopeFacts {
        bound: row.opt::<String>("bound")?,
        server: row.req::<bool>("server")?,
        platform: row.opt::<String>("platform")?.ok_or_else(|| CyError::internal("the platform account is missing"))?,
        setting_exists: row.req::<bool>("setting_exists")?,
        platform_gen: row.opt::<i64>("platform_gen")?.unwrap_or(-1),
    })
}

/// The one customer a billing portal session may reach in this transaction (set by
/// credyt.authenticate_portal, which only a superuser can: see crate::portal).
pub const PORTAL_CUSTOMER: &std::ffi::CStr = c"credyt.portal_customer";

/// The customer the transaction is confined to by a portal session, if any.
pub fn portal_customer() -> Option<String> {
    setting(PORTAL_CUSTOMER)
}

/// True when the role in effect is a server role (credyt.grant_server): what only the
/// server may call (the Stripe secret key) checks this besides the scope.
pub fn is_server(c: &mut SpiClient<'_>) -> Result<bool> {
    Ok(scope_facts(c, None)?.server)
}

/// True when `account` is `ancestor` or one of its descendants.
pub fn is_within(c: &mut SpiClient<'_>, account: &str, ancestor: &str) -> Result<bool> {
    if account == ancestor {
        return Ok(true);
    }
    Ok(one::<bool>(
        c,
        "WITH RECURSIVE up(id, parent_id, depth) AS ( \
           SELECT id, parent_id, 0 FROM credyt.account WHERE id = $1 \
           UNION ALL SELECT a.id, a.parent_id, up.depth + 1 FROM credyt.account a \
             JOIN up ON a.id = up.parent_id WHERE up.depth < 64) \
         SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
        &[account.into(), ancestor.into()],
    )?
    .unwrap_or(false))
}

fn account_exists(c: &mut SpiClient<'_>, id: &str) -> Result<bool> {
    Ok(one::<bool>(c, "SELECT EXISTS (SELECT 1 FROM credyt.account WHERE id = $1)", &[id.into()])?.unwrap_or(false))
}

/// The account in scope (SPEC §3): the bound role's account (or a descendant it
/// selected), else the `credyt.account` setting, else the platform account.
pub fn scope(c: &mut SpiClient<'_>) -> Result<String> {
    scope_with_gen(c, account_setting()).map(|(account, _)| account)
}

/// The scope's inputs besides the tables: the role in effect, the session's role, the
/// `credyt.account` setting and the account an API key authenticated.
type ScopeKey = (u32, u32, Option<String>, Option<String>);

thread_local! {
    static SCOPES: std::cell::RefCell<credyt_core::cache::Owned<(), ScopeKey, String>> = Default::default();
}

/// The account in scope as scope() decides it, from the backend's cache while the
/// role bindings are unchanged, with the platform generation it was decided under:
/// the caller checks it (crate::wallet::Gens) before it relies on the answer.
pub fn scope_cached(c: &mut SpiClient<'_>) -> Result<(String, i64)> {
    let (outer, session) = unsafe { (pg_sys::GetOuterUserId(), pg_sys::GetSessionUserId()) };
    let key: ScopeKey = (outer.to_u32(), session.to_u32(), account_setting(), setting(KEY_ACCOUNT));
    if let Some(hit) = credyt_core::cache::get(&SCOPES, &(), &key) {
        return Ok(hit);
    }
    let (account, gen) = scope_with_gen(c, key.2.clone())?;
    credyt_core::cache::put(&SCOPES, &(), gen, key, account.clone());
    Ok((account, gen))
}

/// Forgets cached scopes unless they were decided under platform generation `gen`.
pub fn check_scopes(gen: i64) -> bool {
    credyt_core::cache::check(&SCOPES, &(), gen)
}

fn scope_with_gen(c: &mut SpiClient<'_>, setting: Option<String>) -> Result<(String, i64)> {
    let facts = scope_facts(c, setting.as_deref())?;
    let gen = facts.platform_gen;
    decide(c, facts, setting).map(|account| (account, gen))
}

fn decide(c: &mut SpiClient<'_>, facts: ScopeFacts, setting: Option<String>) -> Result<String> {
    // On a Citus worker, row security runs here for a query the coordinator sent on
    // behalf of a role: its binding holds; the session's settings (credyt.account, an
    // authenticated key) stayed on the coordinator, so a bound role reads its bound
    // account, a server role nothing (CY401), and an unbound role no account at all.
    if !facts.server && crate::distributed::on_worker(c)? {
        return Ok(facts.bound.unwrap_or_default());
    }
    // A server role has no account of its own: only the one a key authenticated.
    if facts.server {
        return crate::scope::setting(KEY_ACCOUNT).ok_or_else(|| {
            CyError::new(crate::error::Code::Unauthenticated, "no API key was authenticated in this transaction")
                .hint("call credyt.authenticate(key) first, in the same transaction")
        });
    }
    match (facts.bound, setting) {
        (Some(bound), None) => Ok(bound),
        (Some(bound), Some(s)) if s == bound => Ok(bound),
        (Some(bound), Some(s)) => {
            if is_within(c, &s, &bound)? {
                Ok(s)
            } else {
                Err(CyError::forbidden(format!("account {s} is outside the account in scope"))
                    .detail(format!("this role is bound to account {bound} and its descendants"))
                    .hint("RESET credyt.account, or set it to the bound account or one of its sub-organisations"))
            }
        }
        (None, None) => Ok(facts.platform),
        (None, Some(s)) if facts.setting_exists => Ok(s),
        (None, Some(s)) => Err(CyError::not_found(format!("unknown account {s}"))
            .detail("the setting credyt.account names no account")
            .hint("SET credyt.account to an id returned by credyt.create_account(), or RESET it")),
    }
}

/// `root` and all its descendants; for the platform, the test tree too (its twin's),
/// so that the platform's tick() and verify_ledger() cover both environments.
pub fn accounts_within(c: &mut SpiClient<'_>, root: &str) -> Result<Vec<String>> {
    let t = run(
        c,
        "WITH RECURSIVE down(id, depth) AS (SELECT id, 0 FROM credyt.account \
             WHERE id = $1 OR (parent_id IS NULL AND live_id = $1) UNION ALL \
           SELECT a.id, d.depth + 1 FROM credyt.account a JOIN down d ON a.parent_id = d.id WHERE d.depth < 64) \
         SELECT id FROM down ORDER BY depth",
        &[root.into()],
    )?;
    let mut v = Vec::new();
    for row in t {
        v.push(row.req::<String>("id")?);
    }
    Ok(v)
}

/// Requires `account` to be the account in scope or one of its descendants.
pub fn require_within_scope(c: &mut SpiClient<'_>, account: &str, scope: &str) -> Result<()> {
    if !account_exists(c, account)? {
        return Err(CyError::not_found(format!("unknown account {account}")));
    }
    if !is_within(c, account, scope)? {
        return Err(CyError::forbidden(format!("account {account} is outside the account in scope ({scope})")));
    }
    Ok(())
}
