//! Vendors: who an account's costs come from (SPEC §6: a usage event's `costs` name
//! their vendor by its `ven_…` id or its external_id).

use crate::error::{api, CyError};
use crate::scope::scope;
use crate::spi::one;
use crate::validate;
use pgrx::prelude::*;

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_vendor(name: Option<String>, external_id: default!(Option<String>, "NULL")) -> String {
    api(move || {
        let name = validate::name("name", name)?;
        let external_id = validate::optional_key("external_id", external_id)?;
        if external_id.as_deref().is_some_and(|e| e.starts_with("ven_")) {
            return Err(CyError::invalid("external_id must not start with ven_ (the prefix of credyt's ids)"));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let id = crate::ids::new_id("ven")?;
            one::<String>(
                c,
                "INSERT INTO credyt.vendor (account_id, id, name, external_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, external_id) DO NOTHING RETURNING id",
                &[account.as_str().into(), id.as_str().into(), name.as_str().into(), external_id.as_deref().into()],
            )?
            .ok_or_else(|| {
                CyError::conflict(format!(
                    "a vendor with external_id {:?} already exists",
                    external_id.unwrap_or_default()
                ))
            })
        })
    })
}
