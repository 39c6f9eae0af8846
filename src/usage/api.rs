//! record_usage (single and batch) and set_model_cost, as SQL sees them.

use super::*;

pub(super) fn event_type(v: Option<String>) -> Result<String> {
    let v = validate::required("event_type", v)?;
    let n = v.chars().count();
    if n == 0 || n > 255 {
        return Err(CyError::invalid("event_type must be 1 to 255 characters"));
    }
    Ok(v)
}

fn data_object(v: Option<Value>) -> Result<Value> {
    let v = v.unwrap_or_else(|| json!({}));
    if !v.is_object() {
        return Err(CyError::invalid("data must be a JSON object")
            .hint("pass e.g. '{\"model\": \"gpt-4o\", \"input_tokens\": 1200}'"));
    }
    Ok(v)
}

fn subject(v: Option<String>) -> Result<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > 255 => {
            Err(CyError::invalid("subject must be 1 to 255 characters"))
        }
        other => Ok(other),
    }
}

type UsageRow = (
    name!(event_id, String),
    name!(duplicate, bool),
    name!(status, String),
    name!(fees, JsonB),
    name!(charged, AnyNumeric),
    name!(asset, Option<String>),
    name!(available, Option<AnyNumeric>),
);

fn row(o: Outcome) -> UsageRow {
    (
        o.event_id,
        o.duplicate,
        o.status.as_str().to_string(),
        JsonB(o.fees),
        to_numeric(o.charged),
        o.asset,
        o.available.map(to_numeric),
    )
}

#[pg_extern(security_definer, name = "record_usage")]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)] // (the row type: see record_usage_batch)
fn record_usage(
    customer: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    data: default!(Option<crate::json::Json>, "'{}'"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    subject: default!(Option<String>, "NULL"),
    description: default!(Option<String>, "NULL"),
    costs: default!(Option<crate::json::Json>, "NULL"),
    hold_id: default!(Option<String>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(event_id, String),
        name!(duplicate, bool),
        name!(status, String),
        name!(fees, JsonB),
        name!(charged, AnyNumeric),
        name!(asset, Option<String>),
        name!(available, Option<AnyNumeric>),
    ),
> {
    let outcome = api(move || {
        let data = crate::json::optional_with_datum("data", data, crate::json::MAX_BYTES)?;
        let data_datum = data.as_ref().map(|d| d.1);
        let ev = Event {
            customer: validate::required("customer", customer)?,
            event_id: validate::key("event_id", event_id)?,
            event_type: self::event_type(event_type)?,
            data: data_object(data.map(|d| d.0))?,
            data_datum,
            occurred_at: validate::finite("occurred_at", occurred_at)?,
            subject: self::subject(subject)?,
            description: validate::optional_text("description", description)?,
            costs: crate::json::optional("costs", costs, crate::json::MAX_BYTES)?,
            hold_id,
        };
        Spi::connect_mut(|c| record_one(c, ev))
    });
    TableIterator::new(std::iter::once(row(outcome)))
}

/// Parses one element of the batch form.
fn batch_event(c: &mut SpiClient<'_>, v: &Value) -> Result<Event> {
    let o: &Map<String, Value> = v.as_object().ok_or_else(|| CyError::invalid("must be a JSON object"))?;
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "customer"
                | "event_id"
                | "event_type"
                | "data"
                | "occurred_at"
                | "subject"
                | "description"
                | "costs"
                | "hold_id"
        ) {
            return Err(CyError::invalid(format!("{k} is not a known field")));
        }
    }
    let text = |k: &str| -> Result<Option<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CyError::invalid(format!("{k} must be a string"))),
        }
    };
    let occurred_at = match text("occurred_at")? {
        None => None,
        Some(s) if credyt_core::period::is_rfc3339(&s) => {
            one::<TimestampWithTimeZone>(c, "SELECT $1::timestamptz", &[s.as_str().into()])?
        }
        Some(s) => {
            return Err(CyError::invalid(format!("occurred_at {s:?} is not an RFC 3339 timestamp"))
                .hint("e.g. 2026-01-07T13:19:18.265Z"))
        }
    };
    Ok(Event {
        customer: validate::required("customer", text("customer")?)?,
        event_id: validate::key("event_id", text("event_id")?)?,
        event_type: event_type(text("event_type")?)?,
        data: data_object(o.get("data").filter(|d| !d.is_null()).cloned())?,
        data_datum: None,
        occurred_at,
        subject: subject(text("subject")?)?,
        description: validate::optional_text("description", text("description")?)?,
        costs: o.get("costs").filter(|d| !d.is_null()).cloned(),
        hold_id: text("hold_id")?,
    })
}

/// At most this many events per batch call. (Origin: ten of SPEC §13's 1,000-event
/// batches; the batch's arrays and its one transaction stay a few MB.)
const MAX_BATCH: usize = 10_000;

// The row type is spelled out again: pg_extern reads the signature's tokens, so a type
// alias would not name the columns.
#[pg_extern(security_definer, name = "record_usage")]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::type_complexity)]
fn record_usage_batch(
    events: Option<crate::json::Json>,
) -> TableIterator<
    'static,
    (
        name!(event_id, String),
        name!(duplicate, bool),
        name!(status, String),
        name!(fees, JsonB),
        name!(charged, AnyNumeric),
        name!(asset, Option<String>),
        name!(available, Option<AnyNumeric>),
    ),
> {
    let outcomes = api(move || {
        // 10,000 events of up to a few KiB each
        let events = crate::json::required("events", events, crate::json::MAX_BATCH_BYTES)?;
        let arr = match events {
            Value::Array(a) => a,
            _ => return Err(CyError::invalid("events must be a JSON array of events")),
        };
        if arr.len() > MAX_BATCH {
            return Err(CyError::invalid(format!("events has {} elements; at most {MAX_BATCH} per call", arr.len())));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let mut events = Vec::with_capacity(arr.len());
            for (i, v) in arr.iter().enumerate() {
                events.push(
                    batch_event(c, v).map_err(|e| CyError { message: format!("events[{i}]: {}", e.message), ..e })?,
                );
            }
            if crate::distributed::active() {
                record_sharded(c, &account, events)
            } else {
                let index: Vec<usize> = (0..events.len()).collect();
                record_batch(c, &account, events, &index)
            }
        })
    });
    TableIterator::new(outcomes.into_iter().map(row))
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_model_cost(
    vendor: Option<String>,
    model: Option<String>,
    input_per_million: Option<AnyNumeric>,
    output_per_million: Option<AnyNumeric>,
    currency: default!(Option<String>, "'USD'"),
) {
    api(move || {
        let vendor = validate::key("vendor", vendor)?;
        let model = validate::key("model", model)?;
        let input = money::optional_non_negative("input_per_million", input_per_million)?
            .ok_or_else(|| CyError::invalid("input_per_million must not be NULL"))?;
        let output = money::optional_non_negative("output_per_million", output_per_million)?
            .ok_or_else(|| CyError::invalid("output_per_million must not be NULL"))?;
        let currency = validate::required("currency", currency)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let asset = resolve_asset(c, &account, Some(&currency))?;
            if credyt_core::fiat::minor_units(&asset.code).is_none() {
                return Err(CyError::invalid(format!("currency {currency} must be an ISO 4217 currency")));
            }
            run(
                c,
                "INSERT INTO credyt.model_cost (account_id, vendor, model, input_per_million, output_per_million, currency) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, vendor, model) DO UPDATE \
                 SET input_per_million = EXCLUDED.input_per_million, output_per_million = EXCLUDED.output_per_million, \
                     currency = EXCLUDED.currency, updated_at = EXCLUDED.updated_at",
                &[account.as_str().into(), vendor.as_str().into(), model.as_str().into(), to_numeric(input).into(),
                  to_numeric(output).into(), currency.as_str().into()],
            )?;
            Ok(())
        })
    })
}
