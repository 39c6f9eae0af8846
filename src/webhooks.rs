//! Webhook endpoints as SQL sees them (SPEC §10): create, update, delete, test events,
//! replays, and the check that refuses private destinations. Above the outbox
//! (crate::events), which they write to; the outbox calls only crate::deliveries.

use crate::deliveries::{queue, subscribed};
use crate::error::{api, CyError, Result};
use crate::scope::{is_within, scope};
use crate::spi::{one, run, Row};
use credyt_core::webhook::{
    check_destination, check_topic, check_url, format_secret, is_private_name, url_host, SECRET_BYTES,
};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use serde_json::json;

/// Most topic filters on one endpoint. (Origin: above the number of event types, so
/// any selection of them fits; each event matches every filter of every endpoint.)
const MAX_TOPICS: usize = 64;

/// How long a rotated-out secret still signs (a second signature), so receivers can
/// switch to the new secret without dropping a delivery. (Origin: Stripe's and Svix's
/// default expiry of a rolled secret is 24 hours.)
const ROTATION_OVERLAP: &str = "24 hours";

fn new_secret() -> Result<String> {
    let mut key = [0u8; SECRET_BYTES];
    crate::ids::strong_random(&mut key)?;
    Ok(format_secret(&key))
}

/// `credyt.webhook_allow_private`: lets endpoints reach loopback and private
/// addresses, for local development and tests. Administrator-only (SUSET), off by
/// default; credyt-worker reads the same setting in its own session.
pub static ALLOW_PRIVATE: GucSetting<bool> = GucSetting::<bool>::new(false);

pub fn init_gucs() {
    GucRegistry::define_bool_guc(
        c"credyt.webhook_allow_private",
        c"Allows webhook endpoints on loopback, private and link-local addresses.",
        c"For local development and tests only: it lets tenants point the worker at the network it runs in.",
        &ALLOW_PRIVATE,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn url_arg(url: Option<String>) -> Result<String> {
    let url = url.ok_or_else(|| CyError::invalid("url must not be NULL"))?;
    check_url(&url).map_err(|e| CyError::invalid(e).hint("give the endpoint's full http:// or https:// URL"))?;
    if !ALLOW_PRIVATE.get() {
        check_public(&url)?;
    }
    Ok(url)
}

/// Refuses a URL whose host is, or resolves to, a private or loopback address. A name
/// that does not resolve now is accepted: the worker checks every address again at
/// delivery time (DNS may change; that is the check that counts).
fn check_public(url: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let host = url_host(url).ok_or_else(|| CyError::invalid(format!("url has no host: {url:?}")))?;
    let resolved: Vec<std::net::IpAddr> = if host.parse::<std::net::IpAddr>().is_ok() || is_private_name(&host) {
        Vec::new()
    } else {
        (host.as_str(), 443).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default()
    };
    check_destination(&host, &resolved).map_err(|why| {
        CyError::invalid(why)
            .detail("webhook endpoints must be reachable on the public internet")
            .hint("for local development an administrator can SET credyt.webhook_allow_private = on")
    })
}

/// Validated, de-duplicated topic filters.
fn topics_arg(topics: Option<Vec<Option<String>>>) -> Result<Vec<String>> {
    let topics =
        topics.ok_or_else(|| CyError::invalid("topics must not be NULL").hint("'{*}' subscribes to every event"))?;
    if topics.is_empty() {
        return Err(CyError::invalid("topics must not be empty").hint("'{*}' subscribes to every event"));
    }
    if topics.len() > MAX_TOPICS {
        return Err(CyError::invalid(format!("at most {MAX_TOPICS} topics per endpoint"))
            .hint("use a prefix such as 'grant.*'"));
    }
    let mut out: Vec<String> = Vec::with_capacity(topics.len());
    for t in topics {
        let t = t.ok_or_else(|| CyError::invalid("topics must not contain NULL"))?;
        check_topic(&t).map_err(CyError::invalid)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// An endpoint of the account in scope (or below it), locked for update.
struct Endpoint {
    account: String,
    connect: bool,
    enabled: bool,
}

fn endpoint(c: &mut SpiClient<'_>, id: &str, scope: &str) -> Result<Endpoint> {
    let t = run(
        c,
        "SELECT account_id, connect, enabled FROM credyt.webhook WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        &[id.into()],
    )?;
    let unknown =
        || CyError::not_found(format!("unknown webhook {id}")).hint("credyt.webhooks lists the endpoints in scope");
    if t.is_empty() {
        return Err(unknown());
    }
    let row = t.first();
    let e = Endpoint {
        account: row.req::<String>("account_id")?,
        connect: row.req::<bool>("connect")?,
        enabled: row.req::<bool>("enabled")?,
    };
    // Another tenant's endpoint is unknown here, so ids reveal nothing.
    if !is_within(c, &e.account, scope)? {
        return Err(unknown());
    }
    Ok(e)
}

fn require_enabled(id: &str, e: &Endpoint) -> Result<()> {
    if e.enabled {
        return Ok(());
    }
    Err(CyError::conflict(format!("webhook {id} is disabled"))
        .hint(format!("enable it first: SELECT credyt.update_webhook('{id}', enabled => true)")))
}

/// Ends the pending deliveries of an endpoint that stops receiving: failed, with
/// the reason, and replayable with replay_event once it receives again.
fn fail_pending(c: &mut SpiClient<'_>, id: &str, reason: &'static str) -> Result<()> {
    run(
        c,
        "UPDATE credyt.delivery SET status = 'failed', last_error = $2, claim = NULL, claimed_by = NULL \
         WHERE webhook_id = $1 AND status = 'pending'",
        &[id.into(), reason.into()],
    )?;
    Ok(())
}

fn webhook_id_arg(id: Option<String>) -> Result<String> {
    id.ok_or_else(|| CyError::invalid("webhook_id must not be NULL"))
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_webhook(
    url: Option<String>,
    topics: default!(Option<Vec<Option<String>>>, "'{*}'"),
    connect: default!(Option<bool>, "false"),
) -> TableIterator<'static, (name!(id, String), name!(secret, String))> {
    let row = api(move || {
        let url = url_arg(url)?;
        let topics = topics_arg(topics)?;
        let connect = connect.ok_or_else(|| CyError::invalid("connect must not be NULL"))?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let id = crate::ids::new_id("whd")?;
            let secret = new_secret()?;
            run(
                c,
                "INSERT INTO credyt.webhook (account_id, id, url, topics, connect, secret) VALUES ($1, $2, $3, $4, $5, $6)",
                &[account.into(), id.as_str().into(), url.into(), topics.into(), connect.into(), secret.as_str().into()],
            )?;
            Ok((id, secret))
        })
    });
    TableIterator::once(row)
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn update_webhook(
    webhook_id: Option<String>,
    url: default!(Option<String>, "NULL"),
    topics: default!(Option<Vec<Option<String>>>, "NULL"),
    enabled: default!(Option<bool>, "NULL"),
    rotate_secret: default!(Option<bool>, "false"),
) -> TableIterator<'static, (name!(id, String), name!(secret, Option<String>))> {
    let row = api(move || {
        let id = webhook_id_arg(webhook_id)?;
        let url = url.map(|u| url_arg(Some(u))).transpose()?;
        let topics = topics.map(|t| topics_arg(Some(t))).transpose()?;
        let rotate = rotate_secret.unwrap_or(false);
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let e = endpoint(c, &id, &scope)?;
            let secret = if rotate { Some(new_secret()?) } else { None };
            // (the end of the overlap computed first: Citus, where endpoints are a
            // reference table, takes no volatile function inside a CASE)
            let overlap_ends =
                one::<TimestampWithTimeZone>(c, "SELECT now() + $1::interval", &[ROTATION_OVERLAP.into()])?;
            run(
                c,
                "UPDATE credyt.webhook SET url = coalesce($2, url), topics = coalesce($3, topics), \
                   enabled = coalesce($4, enabled), \
                   previous_secret = CASE WHEN $5::text IS NULL THEN previous_secret ELSE secret END, \
                   previous_until = CASE WHEN $5::text IS NULL THEN previous_until ELSE $6::timestamptz END, \
                   secret = coalesce($5, secret), updated_at = now() \
                 WHERE id = $1",
                &[
                    id.as_str().into(),
                    url.into(),
                    topics.into(),
                    enabled.into(),
                    secret.clone().into(),
                    overlap_ends.into(),
                ],
            )?;
            if e.enabled && enabled == Some(false) {
                fail_pending(c, &id, "webhook disabled")?;
            }
            Ok((id, secret))
        })
    });
    TableIterator::once(row)
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn delete_webhook(webhook_id: Option<String>) {
    api(move || {
        let id = webhook_id_arg(webhook_id)?;
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            endpoint(c, &id, &scope)?;
            run(
                c,
                "UPDATE credyt.webhook SET deleted_at = now(), enabled = false, secret = '', previous_secret = NULL, \
                   previous_until = NULL, updated_at = now() WHERE id = $1",
                &[id.as_str().into()],
            )?;
            fail_pending(c, &id, "webhook deleted")
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn send_test_event(
    topic: default!(Option<String>, "'webhook.test'"),
    webhook_id: default!(Option<String>, "NULL"),
    account_id: default!(Option<String>, "NULL"),
) -> String {
    api(move || {
        let topic = topic.ok_or_else(|| CyError::invalid("topic must not be NULL"))?;
        check_topic(&topic).map_err(CyError::invalid)?;
        let Some(topic) = crate::events::Topic::parse(&topic) else {
            return Err(CyError::invalid(format!("topic {topic:?} is a filter; a test event needs one event type"))
                .hint("for example 'webhook.test' or 'balance_threshold_hit'"));
        };
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let now = pgrx::datetime::now();
            // The account the event comes from: the scope, or a connected account below it.
            let from = match account_id {
                None => None,
                Some(a) => {
                    crate::scope::require_within_scope(c, &a, &scope)?;
                    Some(a)
                }
            };
            match webhook_id {
                None => {
                    let data = json!({"test": true, "webhook_id": null});
                    crate::events::emit(c, from.as_deref().unwrap_or(&scope), topic, now, data)
                }
                Some(wid) => {
                    let e = endpoint(c, &wid, &scope)?;
                    require_enabled(&wid, &e)?;
                    let origin = match from {
                        Some(a) if a != e.account => {
                            if !e.connect || !is_within(c, &a, &e.account)? {
                                return Err(CyError::conflict(format!(
                                    "webhook {wid} does not receive the events of account {a}"
                                ))
                                .hint("an endpoint receives connected accounts' events when its connect is true"));
                            }
                            a
                        }
                        _ => e.account.clone(),
                    };
                    let data = json!({"test": true, "webhook_id": wid});
                    let event = crate::events::write(c, &origin, topic, now, data)?;
                    queue(c, &event, vec![(wid, e.account)])?;
                    Ok(event)
                }
            }
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn replay_event(event_id: Option<String>, webhook_id: default!(Option<String>, "NULL")) -> i64 {
    api(move || {
        let event_id = event_id.ok_or_else(|| CyError::invalid("event_id must not be NULL"))?;
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            // KEY SHARE: the retention pass in tick() locks events it prunes FOR UPDATE,
            // so an event is either replayed or pruned, never both.
            let t = run(
                c,
                "SELECT account_id, event_type FROM credyt.event WHERE id = $1 FOR KEY SHARE",
                &[event_id.as_str().into()],
            )?;
            let unknown = || {
                CyError::not_found(format!("unknown event {event_id}")).hint(
                    "credyt.events lists the events in scope; delivered events are pruned after credyt.event_retention",
                )
            };
            if t.is_empty() {
                return Err(unknown());
            }
            let row = t.first();
            let account = row.req::<String>("account_id")?;
            let event_type = row.req::<String>("event_type")?;
            if !is_within(c, &account, &scope)? {
                return Err(unknown());
            }
            let targets = match webhook_id {
                None => subscribed(c, &account, &event_type)?,
                Some(wid) => {
                    let e = endpoint(c, &wid, &scope)?;
                    require_enabled(&wid, &e)?;
                    let routed = if e.connect {
                        account != e.account && is_within(c, &account, &e.account)?
                    } else {
                        account == e.account
                    };
                    if !routed {
                        return Err(CyError::conflict(format!("webhook {wid} does not receive the events of account {account}"))
                            .hint("an endpoint receives its own account's events; a connect endpoint those of the accounts below it"));
                    }
                    vec![(wid, e.account)]
                }
            };
            let n = queue(c, &event_id, targets)?;
            if n > 0 {
                crate::events::announce(c)?;
            }
            Ok(n)
        })
    })
}

/// The signing secret of an endpoint of the account in scope itself (GET
/// /webhooks/{id} shows it to its own account, as Credyt does); an endpoint of an
/// account below is CY404 here, as any other.
#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn webhook_secret(webhook_id: Option<String>) -> String {
    api(move || {
        let id = webhook_id_arg(webhook_id)?;
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            crate::spi::one::<String>(
                c,
                "SELECT secret FROM credyt.webhook WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
                &[id.as_str().into(), scope.as_str().into()],
            )?
            .ok_or_else(|| CyError::not_found(format!("unknown webhook {id}")))
        })
    })
}
