//! The OpenAPI 3.1 document, generated from the handlers' own types and paths.

use crate::routes::{accounts, customers, events, wallet, webhooks};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "credyt", description = "Credyt's REST API over the credyt PostgreSQL extension."),
    paths(
        accounts::get_self, accounts::create, accounts::list, accounts::get,
        customers::create, customers::list, customers::get, customers::update,
        wallet::get, wallet::account, wallet::adjust, wallet::charge, wallet::transaction, wallet::grants,
        events::submit, events::list, events::get,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::test,
        webhooks::test_all,
    ),
    modifiers(&Keys),
    security(("api_key" = []))
)]
pub struct ApiDoc;

/// X-CREDYT-API-KEY on every operation.
struct Keys;

impl Modify for Keys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-CREDYT-API-KEY"))),
        );
    }
}
