//! What preparing an event reads: the customer's subscribed prices, model costs.
//! Per event (Direct) or preloaded for a whole batch (Preloaded).

use super::*;

thread_local! {
    /// Parsed prices by (product id, version, position). Published versions never
    /// change, so an entry is valid for the life of the backend.
    static PRICES: RefCell<HashMap<(String, i32, i32), Rc<Price>>> = RefCell::new(HashMap::new());
}

// ---------------------------------------------------------------------------------
// What preparing an event reads, per event (one call) or preloaded (a batch)

pub(super) type PriceKey = (String, i32, i32);

/// A price of one of the customer's subscriptions, with the subscription's window
/// (microseconds since 2000-01-01, as Postgres keeps timestamps).
pub(super) struct SubscribedPrice {
    pub(super) key: PriceKey,
    pub(super) starts_at: i64,
    pub(super) ends_at: Option<i64>,
    pub(super) price: Rc<Price>,
}

pub(super) struct ModelCost {
    pub(super) vendor: String,
    pub(super) input: Decimal,
    pub(super) output: Decimal,
    pub(super) currency: String,
}

pub(super) trait Lookups {
    fn customer(&mut self, c: &mut SpiClient<'_>, reference: &str) -> Result<String>;
    /// Every price of the customer's subscriptions (any time) for this event type.
    fn prices(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>>;
    /// Costs of a model, most recently set first.
    fn model_costs(&mut self, c: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>>;
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str) -> Result<Option<Decimal>>;
}

/// The parsed price for a stored definition, from the per-backend cache.
fn price_of(key: &PriceKey, definition: &str) -> Result<Rc<Price>> {
    if let Some(p) = PRICES.with(|p| p.borrow().get(key).cloned()) {
        return Ok(p);
    }
    let value: Value = serde_json::from_str(definition).map_err(CyError::internal)?;
    let price = Rc::new(
        credyt_core::pricing::parse_price(&value, "price")
            .map_err(|e| CyError::internal(format!("stored price: {e}")))?,
    );
    PRICES.with(|p| p.borrow_mut().insert(key.clone(), price.clone()));
    Ok(price)
}

/// Reads a row of (product_id, version, position, starts_at, ends_at, definition)
/// starting at column `from`.
fn subscribed_price(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<Rc<SubscribedPrice>> {
    let key = (
        row.get::<String>(from)?.unwrap_or_default(),
        row.get::<i32>(from + 1)?.unwrap_or_default(),
        row.get::<i32>(from + 2)?.unwrap_or_default(),
    );
    let starts_at = row.get::<TimestampWithTimeZone>(from + 3)?.map(|t| t.into_inner()).unwrap_or_default();
    let ends_at = row.get::<TimestampWithTimeZone>(from + 4)?.map(|t| t.into_inner());
    let price = price_of(&key, &row.get::<String>(from + 5)?.unwrap_or_default())?;
    Ok(Rc::new(SubscribedPrice { key, starts_at, ends_at, price }))
}

fn model_cost_row(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<Rc<ModelCost>> {
    Ok(Rc::new(ModelCost {
        vendor: row.get::<String>(from)?.unwrap_or_default(),
        input: stored(&row.get::<String>(from + 1)?.unwrap_or_default())?,
        output: stored(&row.get::<String>(from + 2)?.unwrap_or_default())?,
        currency: row.get::<String>(from + 3)?.unwrap_or_default(),
    }))
}

/// One call: each lookup is a query through a kept plan.
pub(super) struct Direct<'a> {
    pub(super) account: &'a str,
}

impl Lookups for Direct<'_> {
    fn customer(&mut self, c: &mut SpiClient<'_>, reference: &str) -> Result<String> {
        customers::resolve(c, self.account, Some(reference))
    }
    fn prices(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>> {
        let t = run(
            c,
            "SELECT p.product_id, p.version, p.position, s.starts_at, s.ends_at, p.definition::text \
             FROM credyt.subscription s JOIN credyt.price p \
               ON p.product_id = s.product_id AND p.version = s.version AND p.event_type = $2 \
             WHERE s.customer_id = $1 ORDER BY s.id, p.position",
            &[customer.into(), event_type.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            out.push(subscribed_price(&row, 1)?);
        }
        Ok(out)
    }
    fn model_costs(&mut self, c: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>> {
        let t = run(
            c,
            "SELECT vendor, input_per_million::text, output_per_million::text, currency FROM credyt.model_cost \
             WHERE account_id = $1 AND model = $2 ORDER BY updated_at DESC",
            &[self.account.into(), model.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            out.push(model_cost_row(&row, 1)?);
        }
        Ok(out)
    }
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str) -> Result<Option<Decimal>> {
        one::<String>(
            c,
            "SELECT rate::text FROM credyt.asset WHERE account_id = $1 AND code = $2 AND rate_currency = $3 AND rate IS NOT NULL",
            &[self.account.into(), asset.into(), currency.into()],
        )?
        .map(|r| stored(&r))
        .transpose()
    }
}

/// A batch: everything its events need, read in four statements up front.
pub(super) struct Preloaded {
    account: String,
    pub(super) customers: HashMap<String, String>,
    prices: HashMap<(String, String), Vec<Rc<SubscribedPrice>>>,
    model_costs: HashMap<String, Vec<Rc<ModelCost>>>,
    rates: HashMap<(String, String), Decimal>,
}

impl Preloaded {
    pub(super) fn load(c: &mut SpiClient<'_>, account: &str, events: &[Event]) -> Result<Preloaded> {
        let refs: Vec<String> =
            events.iter().map(|e| e.customer.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let mut customers = HashMap::new();
        let t = run_once(
            c,
            "SELECT r.ref, coalesce(i.id, e.id) FROM unnest($2::text[]) r(ref) \
             LEFT JOIN credyt.customer i ON i.id = r.ref AND i.account_id = $1 \
             LEFT JOIN credyt.customer e ON e.account_id = $1 AND e.external_id = r.ref",
            &[account.into(), refs.into()],
        )?;
        for row in t {
            if let (Some(r), Some(id)) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                customers.insert(r, id);
            }
        }
        let ids: Vec<String> =
            customers.values().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let types: Vec<String> = events
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut prices: HashMap<(String, String), Vec<Rc<SubscribedPrice>>> = HashMap::new();
        let t = run_once(
            c,
            "SELECT s.customer_id, p.event_type, p.product_id, p.version, p.position, s.starts_at, s.ends_at, \
                    p.definition::text \
             FROM credyt.subscription s JOIN credyt.price p ON p.product_id = s.product_id AND p.version = s.version \
             WHERE s.customer_id = ANY($1) AND p.event_type = ANY($2) ORDER BY s.id, p.position",
            &[ids.into(), types.into()],
        )?;
        for row in t {
            let key = (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default());
            prices.entry(key).or_default().push(subscribed_price(&row, 3)?);
        }
        let models: Vec<String> = events
            .iter()
            .filter(|e| e.costs.is_none())
            .filter_map(|e| e.data.get("model").and_then(Value::as_str).map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut model_costs: HashMap<String, Vec<Rc<ModelCost>>> = HashMap::new();
        if !models.is_empty() {
            let t = run_once(
                c,
                "SELECT model, vendor, input_per_million::text, output_per_million::text, currency FROM credyt.model_cost \
                 WHERE account_id = $1 AND model = ANY($2) ORDER BY updated_at DESC",
                &[account.into(), models.into()],
            )?;
            for row in t {
                model_costs
                    .entry(row.get::<String>(1)?.unwrap_or_default())
                    .or_default()
                    .push(model_cost_row(&row, 2)?);
            }
        }
        let mut rates = HashMap::new();
        let t = run(
            c,
            "SELECT code, rate_currency, rate::text FROM credyt.asset WHERE account_id = $1 AND rate IS NOT NULL",
            &[account.into()],
        )?;
        for row in t {
            rates.insert(
                (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()),
                stored(&row.get::<String>(3)?.unwrap_or_default())?,
            );
        }
        Ok(Preloaded { account: account.to_string(), customers, prices, model_costs, rates })
    }
}

impl Lookups for Preloaded {
    fn customer(&mut self, _: &mut SpiClient<'_>, reference: &str) -> Result<String> {
        self.customers.get(reference).cloned().ok_or_else(|| {
            CyError::not_found(format!("unknown customer {reference}"))
                .detail(format!("no customer with that id or external_id in account {}", self.account))
        })
    }
    fn prices(&mut self, _: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>> {
        Ok(self.prices.get(&(customer.to_string(), event_type.to_string())).cloned().unwrap_or_default())
    }
    fn model_costs(&mut self, _: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>> {
        Ok(self.model_costs.get(model).cloned().unwrap_or_default())
    }
    fn rate(&mut self, _: &mut SpiClient<'_>, asset: &str, currency: &str) -> Result<Option<Decimal>> {
        Ok(self.rates.get(&(asset.to_string(), currency.to_string())).copied())
    }
}
