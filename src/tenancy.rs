//! Tenancy (SPEC §3): accounts, the account in scope, role bindings.
//!
//! The API runs SECURITY DEFINER as the extension owner, which bypasses row-level
//! security, so every API statement filters by the account in scope explicitly;
//! RLS is the second wall, for what application roles read directly.

use crate::error::{api, CyError, Result};
use crate::plan_cache::{one, run};
use crate::validate;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

/// The platform account: the one account without a parent.
pub fn platform(c: &mut SpiClient<'_>) -> Result<String> {
    one::<String>(c, "SELECT id FROM credyt.account WHERE parent_id IS NULL", &[])?
        .ok_or_else(|| CyError::internal("the platform account is missing"))
}

/// The setting `credyt.account`, if set to something non-empty.
fn account_setting() -> Option<String> {
    let p = unsafe { pg_sys::GetConfigOption(c"credyt.account".as_ptr(), true, false) };
    if p.is_null() {
        return None;
    }
    let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// What the account in scope is decided from, read in one statement: the binding of
/// the role in effect (after SET ROLE), else of the session user, so that a bound
/// login that SETs ROLE to an unbound role stays confined; the platform account; and
/// whether the `credyt.account` setting names an existing account.
struct ScopeFacts {
    bound: Option<String>,
    platform: String,
    setting_exists: bool,
}

fn scope_facts(c: &mut SpiClient<'_>, setting: Option<&str>) -> Result<ScopeFacts> {
    let outer = unsafe { pg_sys::GetOuterUserId() };
    let session = unsafe { pg_sys::GetSessionUserId() };
    let t = run(
        c,
        "SELECT coalesce((SELECT account_id FROM credyt.role_binding WHERE role_oid = $1), \
                         (SELECT account_id FROM credyt.role_binding WHERE role_oid = $2)), \
                (SELECT id FROM credyt.account WHERE parent_id IS NULL), \
                EXISTS (SELECT 1 FROM credyt.account WHERE id = $3)",
        &[outer.into(), session.into(), setting.into()],
    )?;
    let row = t.first();
    Ok(ScopeFacts {
        bound: row.get::<String>(1)?,
        platform: row.get::<String>(2)?.ok_or_else(|| CyError::internal("the platform account is missing"))?,
        setting_exists: row.get::<bool>(3)?.unwrap_or(false),
    })
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
    let setting = account_setting();
    let facts = scope_facts(c, setting.as_deref())?;
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

/// `root` and all its descendants.
pub fn accounts_within(c: &mut SpiClient<'_>, root: &str) -> Result<Vec<String>> {
    let t = run(
        c,
        "WITH RECURSIVE down(id, depth) AS (SELECT $1::text, 0 UNION ALL \
           SELECT a.id, d.depth + 1 FROM credyt.account a JOIN down d ON a.parent_id = d.id WHERE d.depth < 64) \
         SELECT id FROM down ORDER BY depth",
        &[root.into()],
    )?;
    let mut v = Vec::new();
    for row in t {
        v.push(row.get::<String>(1)?.unwrap_or_default());
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

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn current_account() -> String {
    api(|| Spi::connect_mut(scope))
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn platform_account() -> String {
    api(|| Spi::connect_mut(platform))
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_account(
    name: Option<String>,
    external_id: default!(Option<String>, "NULL"),
    parent_id: default!(Option<String>, "NULL"),
    metadata: default!(Option<crate::json::Json>, "'{}'"),
) -> String {
    api(move || {
        let name = validate::name("name", name)?;
        let external_id = validate::optional_key("external_id", external_id)?;
        let metadata = validate::metadata(metadata)?;
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let parent = match parent_id {
                Some(p) => p,
                None => platform(c)?,
            };
            require_within_scope(c, &parent, &scope)?;
            if let Some(ext) = &external_id {
                if let Some(existing) = one::<String>(
                    c,
                    "SELECT id FROM credyt.account WHERE parent_id = $1 AND external_id = $2",
                    &[parent.as_str().into(), ext.as_str().into()],
                )? {
                    return Err(CyError::conflict(format!(
                        "an account with external_id {ext:?} already exists under {parent}"
                    ))
                    .detail(format!("existing account: {existing}")));
                }
            }
            let id = crate::ids::new_id("acc")?;
            run(
                c,
                "INSERT INTO credyt.account (id, parent_id, name, external_id, metadata) VALUES ($1, $2, $3, $4, $5)",
                &[
                    id.as_str().into(),
                    parent.as_str().into(),
                    name.as_str().into(),
                    external_id.clone().into(),
                    JsonB(metadata).into(),
                ],
            )?;
            Ok(id)
        })
    })
}

/// The account in scope's private notification channel of `kind` (balance, events):
/// PostgreSQL has no permission on LISTEN, so a channel is private only while its
/// name cannot be guessed. It carries the account's random channel key, which only
/// the account itself (and its ancestors, who can read its rows) can learn.
fn channel(kind: &'static str) -> String {
    api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            one::<String>(
                c,
                "SELECT 'credyt_' || $2 || '_' || channel_key FROM credyt.account WHERE id = $1",
                &[account.as_str().into(), kind.into()],
            )?
            .ok_or_else(|| CyError::internal("the account in scope has no row"))
        })
    })
}

/// The channel of the live balance push for the account in scope (SPEC §10).
#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn balance_channel() -> String {
    channel("balance")
}

/// The channel on which the account in scope's events are announced (payload: id).
#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn events_channel() -> String {
    channel("events")
}

/// Turns the live balance push on or off for the account in scope (off by default:
/// NOTIFY serialises the commits of the transactions that send it).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_balance_push(enabled: Option<bool>) {
    api(move || {
        let enabled = validate::required("enabled", enabled)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            run(
                c,
                "UPDATE credyt.account SET balance_push = $2 WHERE id = $1",
                &[account.as_str().into(), enabled.into()],
            )?;
            Ok(())
        })
    })
}

/// Confines a role to an account and its descendants. An administrator's function:
/// it writes credyt.role_binding with the caller's own rights, so only the
/// extension's owner (or a superuser) can run it.
#[pg_extern]
#[search_path(@extschema@, pg_temp)]
fn bind_role(role: Option<String>, account_id: Option<String>) {
    api(move || {
        let role = role.ok_or_else(|| CyError::invalid("role must not be NULL"))?;
        let account_id = account_id.ok_or_else(|| CyError::invalid("account_id must not be NULL"))?;
        Spi::connect_mut(|c| {
            let oid = one::<pg_sys::Oid>(
                c,
                "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[role.as_str().into()],
            )?
            .ok_or_else(|| {
                CyError::not_found(format!("unknown role {role}")).hint("create the role first: CREATE ROLE ...")
            })?;
            let scope = scope(c)?;
            require_within_scope(c, &account_id, &scope)?;
            run(
                c,
                "INSERT INTO credyt.role_binding (role_oid, account_id) VALUES ($1, $2) \
                 ON CONFLICT (role_oid) DO UPDATE SET account_id = EXCLUDED.account_id, created_at = now()",
                &[oid.into(), account_id.as_str().into()],
            )?;
            Ok(())
        })
    })
}

/// Internal: a fresh identifier (used by install scripts).
#[pg_extern]
fn _new_id(prefix: &str) -> String {
    api(|| crate::ids::new_id(prefix))
}
