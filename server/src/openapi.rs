//! The OpenAPI 3.1 document, generated from the handlers' own types and paths.

use crate::routes::{accounts, assets, customers, events, products, topups, vendors, wallet, webhooks};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "credyt", description = "Credyt's REST API over the credyt PostgreSQL extension."),
    paths(
        accounts::get_self, accounts::create, accounts::list, accounts::get,
        customers::create, customers::list, customers::list_stats, customers::get, customers::update,
        customers::get_stats, customers::create_subscription, customers::update_subscription,
        customers::update_subscription_product,
        products::create, products::list, products::get, products::delete, products::create_version,
        products::get_version, products::update_version, products::archive_version, products::simulate_usage,
        products::subscribers,
        assets::create, assets::list, assets::get, assets::add_rate, assets::quote,
        vendors::create, vendors::list, vendors::get, vendors::stats,
        wallet::get, wallet::account, wallet::adjust, wallet::charge, wallet::transaction, wallet::grants,
        events::submit, events::list, events::get,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::test,
        webhooks::test_connected, webhooks::test_all, webhooks::test_all_connected, webhooks::list_events,
        topups::initiate, topups::get, topups::webhook, crate::portal::create_session,
    ),
    modifiers(&Keys, &Problems),
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

/// Every operation's error answers, as the server gives them: problem+json bodies, and
/// the statuses any route can answer (401 without a valid key, 403 for an account out
/// of reach, 422 for input that does not parse, 503 when the database cannot be
/// reached), 404 too for routes with path parameters.
struct Problems;

impl Modify for Problems {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = || ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put];
            for op in ops.into_iter().flatten() {
                // (utoipa writes every body as application/json: a Problem is problem+json)
                for response in op.responses.responses.values_mut() {
                    if let utoipa::openapi::RefOr::T(r) = response {
                        if let Some(c) = r.content.shift_remove("application/json") {
                            let is_problem = matches!(&c.schema, Some(utoipa::openapi::RefOr::Ref(x)) if x.ref_location.ends_with("/Problem"));
                            r.content.insert(
                                if is_problem { "application/problem+json" } else { "application/json" }.into(),
                                c,
                            );
                        }
                    }
                }
                let mut statuses = vec![
                    ("401", "no valid API key"),
                    ("403", "an account out of the key's reach"),
                    ("422", "input that does not parse or is refused"),
                    ("503", "the database is unreachable"),
                ];
                if path.contains('{') {
                    statuses.push(("404", "unknown"));
                }
                for (status, why) in statuses {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(why)
                            .content("application/problem+json", problem())
                            .build()
                            .into()
                    });
                }
            }
        }
    }
}
