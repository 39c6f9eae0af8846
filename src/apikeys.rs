//! API keys (credyt-server): created for the account in scope, in one of two
//! environments, each its own account tree; authenticate() checks a key and sets the
//! account a server role serves for the rest of the transaction.

use crate::error::{api, Code, CyError, Result};
use crate::scope::{is_within, scope, KEY_ACCOUNT};
use crate::spi::{one, run, Row};
use crate::validate;
use credyt_core::apikey::{format_key, hash_key, key_prefix, looks_like_key, Environment, KEY_BYTES};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

static KEY_ACCOUNT_SETTING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init_gucs() {
    GucRegistry::define_string_guc(
        KEY_ACCOUNT,
        c"The account an API key authenticated in this transaction (set by credyt.authenticate).",
        c"Only a superuser can set it: credyt.authenticate runs as the extension's owner.",
        &KEY_ACCOUNT_SETTING,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL | GucFlags::SUPERUSER_ONLY,
    );
}

/// The environment of an account.
fn environment_of(c: &mut SpiClient<'_>, account: &str) -> Result<Environment> {
    let env = one::<String>(c, "SELECT environment FROM credyt.account WHERE id = $1", &[account.into()])?
        .ok_or_else(|| CyError::internal(format!("account {account} has no row")))?;
    Environment::parse(&env).ok_or_else(|| CyError::internal(format!("account {account} has environment {env:?}")))
}

/// The test twin of a live account: the account that holds its test data, created on
/// first use with the twins of its ancestors (the platform's twin is the test tree's
/// root). Concurrent callers create it once (the unique index on live_id).
fn twin(c: &mut SpiClient<'_>, live: &str) -> Result<String> {
    if let Some(t) = one::<String>(c, "SELECT id FROM credyt.account WHERE live_id = $1", &[live.into()])? {
        return Ok(t);
    }
    let t = run(c, "SELECT parent_id, name, external_id FROM credyt.account WHERE id = $1", &[live.into()])?;
    if t.is_empty() {
        return Err(CyError::internal(format!("account {live} has no row")));
    }
    let row = t.first();
    let (parent, name, external_id) =
        (row.opt::<String>("parent_id")?, row.req::<String>("name")?, row.opt::<String>("external_id")?);
    let test_parent = match parent {
        Some(p) => Some(twin(c, &p)?),
        None => None,
    };
    let id = crate::ids::new_id("acc")?;
    run(
        c,
        "INSERT INTO credyt.account (id, parent_id, environment, live_id, name, external_id) \
         VALUES ($1, $2, 'test', $3, $4, $5) ON CONFLICT (live_id) WHERE live_id IS NOT NULL DO NOTHING",
        &[id.as_str().into(), test_parent.into(), live.into(), name.as_str().into(), external_id.into()],
    )?;
    one::<String>(c, "SELECT id FROM credyt.account WHERE live_id = $1", &[live.into()])?
        .ok_or_else(|| CyError::internal("the test twin vanished"))
}

/// The account of `env` that serves the account in scope: itself, its test twin, or
/// (from a test twin) its live account.
fn account_for(c: &mut SpiClient<'_>, account: &str, env: Environment) -> Result<String> {
    match (environment_of(c, account)?, env) {
        (a, b) if a == b => Ok(account.to_string()),
        (Environment::Live, Environment::Test) => twin(c, account),
        _ => {
            one::<String>(c, "SELECT live_id FROM credyt.account WHERE id = $1", &[account.into()])?.ok_or_else(|| {
                CyError::invalid(format!("account {account} exists in test only"))
                    .hint("create live keys from the live account")
            })
        }
    }
}

/// Creates an API key for the account in scope in `environment`; returns the key,
/// which is not stored and cannot be shown again.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_api_key(name: Option<String>, environment: default!(Option<String>, "'test'")) -> String {
    api(move || {
        let name = validate::name("name", name)?;
        let env = validate::vocab(
            "environment",
            environment,
            Environment::parse,
            &format!("environments: {}", Environment::NAMES),
        )?;
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let account = account_for(c, &scope, env)?;
            let mut random = [0u8; KEY_BYTES];
            crate::ids::strong_random(&mut random)?;
            let key = format_key(env, &random);
            run(
                c,
                "INSERT INTO credyt.api_key (account_id, id, name, environment, hash, prefix) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    account.as_str().into(),
                    crate::ids::new_id("key")?.as_str().into(),
                    name.as_str().into(),
                    env.as_str().into(),
                    hash_key(&key).as_str().into(),
                    key_prefix(&key).as_str().into(),
                ],
            )?;
            Ok(key)
        })
    })
}

/// Revokes a key of the account in scope (or below it); at once for new transactions.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn revoke_api_key(id: Option<String>) {
    api(move || {
        let id = validate::required("id", id)?;
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let account =
                one::<String>(c, "SELECT account_id FROM credyt.api_key WHERE id = $1", &[id.as_str().into()])?;
            // Another tenant's key is unknown here, so ids reveal nothing.
            match account {
                Some(a) if a == scope || is_within(c, &a, &scope)? || within_twin(c, &a, &scope)? => {}
                _ => return Err(CyError::not_found(format!("unknown API key {id}"))),
            }
            run(
                c,
                "UPDATE credyt.api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
                &[id.as_str().into()],
            )?;
            Ok(())
        })
    })
}

/// True when `account` is in the test tree below the test twin of `scope`.
fn within_twin(c: &mut SpiClient<'_>, account: &str, scope: &str) -> Result<bool> {
    match one::<String>(c, "SELECT id FROM credyt.account WHERE live_id = $1", &[scope.into()])? {
        Some(t) => is_within(c, account, &t),
        None => Ok(false),
    }
}

/// Checks an API key and makes its account (or `account`, one below it in the same
/// environment) the account in scope of a server role until the transaction ends.
/// Returns that account. A missing, malformed, unknown or revoked key is CY401, with
/// nothing said about which; an account the key cannot reach is CY403, known or not.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn authenticate(key: Option<String>, account: default!(Option<String>, "NULL")) -> String {
    api(move || {
        let refused = || CyError::new(Code::Unauthenticated, "invalid API key");
        let key = key.filter(|k| looks_like_key(k)).ok_or_else(refused)?;
        Spi::connect_mut(|c| {
            let t = run(
                c,
                "SELECT account_id FROM credyt.api_key WHERE hash = $1 AND revoked_at IS NULL",
                &[hash_key(&key).as_str().into()],
            )?;
            if t.is_empty() {
                return Err(refused());
            }
            let own = t.first().req::<String>("account_id")?;
            let target = match account.filter(|a| !a.is_empty()) {
                None => own,
                Some(a) if a == own || is_within(c, &a, &own)? => a,
                Some(a) => return Err(CyError::forbidden(format!("account {a} is not reachable with this key"))),
            };
            one::<String>(
                c,
                "SELECT set_config($1, $2, true)",
                &[KEY_ACCOUNT.to_str().unwrap_or_default().into(), target.as_str().into()],
            )?;
            Ok(target)
        })
    })
}

/// The account in scope with its environment and organisation (the root of its
/// tree below the platform), for GET /accounts/self.
#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn account_context() -> TableIterator<
    'static,
    (name!(account_id, String), name!(environment, String), name!(org_id, Option<String>), name!(name, String)),
> {
    let row = api(|| {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let t = run(
                c,
                "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM credyt.account WHERE id = $1 \
                   UNION ALL SELECT a.id, a.parent_id, up.depth + 1 FROM credyt.account a \
                     JOIN up ON a.id = up.parent_id WHERE up.depth < 64) \
                 SELECT a.id, a.environment, a.name, \
                   (SELECT u.id FROM up u JOIN credyt.account p ON p.id = u.parent_id \
                     WHERE p.parent_id IS NULL) AS org_id \
                 FROM credyt.account a WHERE a.id = $1",
                &[account.as_str().into()],
            )?;
            let row = t.first();
            Ok((
                row.req::<String>("id")?,
                row.req::<String>("environment")?,
                row.opt::<String>("org_id")?,
                row.req::<String>("name")?,
            ))
        })
    });
    TableIterator::once(row)
}
