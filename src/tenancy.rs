//! Tenancy (SPEC §3): accounts, role bindings, private channels. The account in
//! scope is decided in `scope`.

use crate::error::{api, CyError};
use crate::scope::{platform, require_within_scope, scope};
use crate::spi::{one, run};
use crate::validate;
use pgrx::prelude::*;
use pgrx::JsonB;

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
                // (a child lives in its parent's environment)
                "INSERT INTO credyt.account (id, parent_id, environment, name, external_id, metadata) \
                 SELECT $1, $2, p.environment, $3, $4, $5 FROM credyt.account p WHERE p.id = $2",
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
                "INSERT INTO credyt.role_binding (role_oid, role_name, account_id) VALUES ($1, $3, $2) \
                 ON CONFLICT (role_oid) DO UPDATE SET account_id = EXCLUDED.account_id, role_name = EXCLUDED.role_name, \
                   created_at = EXCLUDED.created_at",
                &[oid.into(), account_id.as_str().into(), role.as_str().into()],
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
