//! Customers of a tenant (SPEC §5). Wherever a customer is named, the `cust_…` id or
//! the tenant's own `external_id` may be given.

use crate::error::{api, CyError, Result};
use crate::scope::scope;
use crate::spi::{one, Row};
use crate::validate;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

/// Resolves a customer reference inside `account`. Customers of other tenants are
/// reported as unknown: the error does not reveal that they exist.
pub fn resolve(c: &mut SpiClient<'_>, account: &str, reference: Option<&str>) -> Result<String> {
    let reference = reference.ok_or_else(|| CyError::invalid("customer must not be NULL"))?;
    let found = lookup(c, account, reference)?;
    // A billing portal session reaches its own customer and no other.
    match crate::scope::portal_customer() {
        Some(only) if only != found => Err(CyError::not_found(format!("unknown customer {reference}"))),
        _ => Ok(found),
    }
}

thread_local! {
    /// Customer id by (account, reference), under the account's catalog generation.
    static IDS: std::cell::RefCell<credyt_core::cache::Owned<String, String, String>> = Default::default();
}

/// resolve(), from the backend's cache while the account's catalog generation is the
/// one the id was read under; with that generation, which the caller checks
/// (crate::wallet::Gens) before it relies on the answer. Unknown references are not
/// kept: the customer may be created a moment later.
pub fn resolve_cached(c: &mut SpiClient<'_>, account: &str, reference: &str) -> Result<(String, i64)> {
    let owner = account.to_string();
    let (found, gen) = match credyt_core::cache::get(&IDS, &owner, &reference.to_string()) {
        Some(hit) => hit,
        None => {
            let t = crate::spi::run(
                c,
                "SELECT (SELECT customer_id FROM credyt.customer_ref WHERE account_id = $1 AND ref = $2) AS id, \
                   (SELECT catalog_gen FROM credyt.account WHERE id = $1) AS gen",
                &[account.into(), reference.into()],
            )?;
            let row = t.first();
            let gen = row.opt::<i64>("gen")?.unwrap_or(-1);
            let id = row.opt::<String>("id")?.ok_or_else(|| unknown(account, reference))?;
            credyt_core::cache::put(&IDS, &owner, gen, reference.to_string(), id.clone());
            (id, gen)
        }
    };
    match crate::scope::portal_customer() {
        Some(only) if only != found => Err(CyError::not_found(format!("unknown customer {reference}"))),
        _ => Ok((found, gen)),
    }
}

/// Forgets the account's cached customer ids unless read under generation `gen`.
pub fn check_ids(account: &str, gen: i64) -> bool {
    credyt_core::cache::check(&IDS, &account.to_string(), gen)
}

fn unknown(account: &str, reference: &str) -> CyError {
    CyError::not_found(format!("unknown customer {reference}"))
        .detail(format!("no customer with that id or external_id in account {account}"))
        .hint("create it with credyt.create_customer(), or check credyt.account")
}

fn lookup(c: &mut SpiClient<'_>, account: &str, reference: &str) -> Result<String> {
    one::<String>(
        c,
        "SELECT customer_id FROM credyt.customer_ref WHERE account_id = $1 AND ref = $2",
        &[account.into(), reference.into()],
    )?
    .ok_or_else(|| unknown(account, reference))
}

/// Claims `reference` (an id or external id) for `customer` in `account`; false when
/// another customer of the account holds it.
fn claim_ref(c: &mut SpiClient<'_>, account: &str, reference: &str, customer: &str) -> Result<bool> {
    Ok(one::<bool>(
        c,
        "INSERT INTO credyt.customer_ref (account_id, ref, customer_id) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING RETURNING true",
        &[account.into(), reference.into(), customer.into()],
    )?
    .is_some())
}

fn taken(c: &mut SpiClient<'_>, account: &str, external_id: &str) -> Result<CyError> {
    let existing = lookup(c, account, external_id).unwrap_or_default();
    Ok(CyError::conflict(format!("a customer with external_id {external_id:?} already exists"))
        .detail(format!("existing customer: {existing}"))
        .hint("external_id is unique within an account (and no customer's id); pass it wherever a customer is named"))
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_customer(
    name: Option<String>,
    external_id: default!(Option<String>, "NULL"),
    email: default!(Option<String>, "NULL"),
    cohort: default!(Option<String>, "NULL"),
    metadata: default!(Option<crate::json::Json>, "'{}'"),
) -> String {
    api(move || {
        let name = validate::name("name", name)?;
        let external_id = validate::optional_key("external_id", external_id)?;
        let email = validate::optional_key("email", email)?;
        let cohort = validate::optional_key("cohort", cohort)?;
        let metadata = validate::metadata(metadata)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let id = crate::ids::new_id("cust")?;
            // the references first: a taken external id writes nothing
            if let Some(ext) = &external_id {
                if !claim_ref(c, &account, ext, &id)? {
                    return Err(taken(c, &account, ext)?);
                }
            }
            if !claim_ref(c, &account, &id, &id)? {
                return Err(CyError::internal(format!("customer id {id} is taken")));
            }
            crate::spi::run(
                c,
                "INSERT INTO credyt.customer (account_id, id, name, external_id, email, cohort, metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    account.as_str().into(),
                    id.as_str().into(),
                    name.as_str().into(),
                    external_id.into(),
                    email.into(),
                    cohort.into(),
                    JsonB(metadata).into(),
                ],
            )?;
            Ok(id)
        })
    })
}

/// Changes a customer's name, external_id, email or cohort (which usage rules apply);
/// NULL keeps a field as it is. A taken external_id is CY409, as at creation.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn update_customer(
    customer: Option<String>,
    name: default!(Option<String>, "NULL"),
    external_id: default!(Option<String>, "NULL"),
    email: default!(Option<String>, "NULL"),
    cohort: default!(Option<String>, "NULL"),
) {
    api(move || {
        let name = name.map(|n| validate::name("name", Some(n))).transpose()?;
        let external_id = validate::optional_key("external_id", external_id)?;
        let email = validate::optional_key("email", email)?;
        let cohort = validate::optional_key("cohort", cohort)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let id = resolve(c, &account, customer.as_deref())?;
            if let Some(ext) = &external_id {
                let current =
                    one::<String>(c, "SELECT external_id FROM credyt.customer WHERE id = $1", &[id.as_str().into()])?;
                if current.as_deref() != Some(ext.as_str()) {
                    if !claim_ref(c, &account, ext, &id)? {
                        return Err(taken(c, &account, ext)?);
                    }
                    if let Some(old) = current {
                        crate::spi::run(
                            c,
                            "DELETE FROM credyt.customer_ref WHERE account_id = $1 AND ref = $2 AND customer_id = $3",
                            &[account.as_str().into(), old.as_str().into(), id.as_str().into()],
                        )?;
                    }
                }
            }
            crate::spi::run(
                c,
                "UPDATE credyt.customer SET name = coalesce($2, name), external_id = coalesce($3, external_id), \
                   email = coalesce($4, email), cohort = coalesce($5, cohort) WHERE id = $1",
                &[id.as_str().into(), name.into(), external_id.into(), email.into(), cohort.into()],
            )?;
            Ok(())
        })
    })
}
