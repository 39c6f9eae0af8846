//! credyt: real-time, wallet-native usage billing as a PostgreSQL extension.
//!
//! One module per domain word of the contract (`../shared/SPEC.md`): tenancy,
//! customers, catalog, wallet (the ledger), usage, holds, credits, events, webhooks
//! and clock. DDL lives in `sql/`, in install order; pure logic (money, burn-down,
//! ids, fees, webhook signing) in the `credyt-core` crate.

use pgrx::prelude::*;

pgrx::pg_module_magic!(name, version);

mod apikeys;
mod assets;
mod billing;
mod catalog;
mod clock;
mod credits;
mod customers;
mod deliveries;
mod distributed;
mod error;
mod events;
mod holds;
mod ids;
mod json;
mod money;
mod portal;
mod scope;
mod spi;
mod stripe;
mod tenancy;
mod usage;
mod validate;
mod vendors;
mod wallet;
mod webhooks;

extension_sql_file!("../sql/001_tables.sql", name = "tables", bootstrap);
extension_sql_file!("../sql/002_views.sql", name = "views", requires = ["tables"]);
extension_sql_file!("../sql/010_catalog.sql", name = "catalog", requires = ["views"]);
extension_sql_file!("../sql/020_usage.sql", name = "usage", requires = ["catalog"]);
extension_sql_file!("../sql/025_generations.sql", name = "generations", requires = ["usage"]);
extension_sql_file!("../sql/030_events.sql", name = "events", requires = ["generations"]);
extension_sql_file!("../sql/040_credits.sql", name = "credits", requires = ["events"]);
extension_sql_file!("../sql/045_billing.sql", name = "billing", requires = ["credits"]);
extension_sql_file!("../sql/050_webhooks.sql", name = "webhooks", requires = ["billing"]);
extension_sql_file!("../sql/060_stripe.sql", name = "stripe", requires = ["webhooks"]);
extension_sql_file!("../sql/070_portal.sql", name = "portal", requires = ["stripe"]);
extension_sql_file!("../sql/080_distribute.sql", name = "distribute", requires = ["portal"]);
extension_sql_file!("../sql/900_security.sql", name = "security", finalize);

/// Registers credyt's settings when a backend loads the library.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    distributed::init();
    apikeys::init_gucs();
    events::init_gucs();
    credits::init_gucs();
    webhooks::init_gucs();
    portal::init_gucs();
    usage::init_gucs();
}

/// In-database tests, one file per domain, compiled only for `cargo pgrx test`.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    include!("../pgrx-tests/support.rs");
    include!("../pgrx-tests/tenancy.rs");
    include!("../pgrx-tests/apikeys.rs");
    include!("../pgrx-tests/wallet.rs");
    include!("../pgrx-tests/catalog.rs");
    include!("../pgrx-tests/usage.rs");
    include!("../pgrx-tests/clock.rs");
    include!("../pgrx-tests/billing.rs");
    include!("../pgrx-tests/credits.rs");
    include!("../pgrx-tests/webhooks.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // (tests deliver to local receivers; one test turns the guard back on)
        vec![
            "shared_preload_libraries = 'pg_cron'",
            "cron.database_name = 'pgrx_tests'",
            "credyt.webhook_allow_private = on",
        ]
    }
}
