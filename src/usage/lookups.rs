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
    /// What one unit of `asset` cost in `currency` at `at` (Postgres microseconds).
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str, at: i64) -> Result<Option<Decimal>>;
    /// The free tier and usage limit that apply to the customer's events of this type.
    fn rules(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Rc<Rules>>;
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

/// The columns subscribed_price() decodes, from a subscription `s` and its price `p`.
macro_rules! price_columns {
    () => {
        "p.product_id, p.version, p.position, s.starts_at, s.ends_at, p.definition::text AS definition "
    };
}

/// Decodes the columns of price_columns!().
fn subscribed_price(row: &impl Row) -> Result<Rc<SubscribedPrice>> {
    let key = (row.req::<String>("product_id")?, row.req::<i32>("version")?, row.req::<i32>("position")?);
    let starts_at = row.req::<TimestampWithTimeZone>("starts_at")?.into_inner();
    let ends_at = row.opt::<TimestampWithTimeZone>("ends_at")?.map(|t| t.into_inner());
    let price = price_of(&key, &row.req::<String>("definition")?)?;
    Ok(Rc::new(SubscribedPrice { key, starts_at, ends_at, price }))
}

/// The columns model_cost_row() decodes, from credyt.model_cost.
macro_rules! model_cost_columns {
    () => {
        "vendor, input_per_million::text AS input, output_per_million::text AS output, currency "
    };
}

/// Decodes the columns of model_cost_columns!().
fn model_cost_row(row: &impl Row) -> Result<Rc<ModelCost>> {
    Ok(Rc::new(ModelCost {
        vendor: row.req::<String>("vendor")?,
        input: row.amount("input")?,
        output: row.amount("output")?,
        currency: row.req::<String>("currency")?,
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
            concat!(
                "SELECT ",
                price_columns!(),
                "FROM credyt.subscription s JOIN credyt.price p \
                   ON p.product_id = s.product_id AND p.version = s.version AND p.event_type = $2 \
                 WHERE s.customer_id = $1 ORDER BY s.id, p.position"
            ),
            &[customer.into(), event_type.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            out.push(subscribed_price(&row)?);
        }
        Ok(out)
    }
    fn model_costs(&mut self, c: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>> {
        let t = run(
            c,
            concat!(
                "SELECT ",
                model_cost_columns!(),
                "FROM credyt.model_cost WHERE account_id = $1 AND model = $2 ORDER BY updated_at DESC"
            ),
            &[self.account.into(), model.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            out.push(model_cost_row(&row)?);
        }
        Ok(out)
    }
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str, at: i64) -> Result<Option<Decimal>> {
        let account = self.account;
        crate::assets::rate_at(c, account, asset, currency, wallet::time_at(at)?)
    }
    fn rules(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Rc<Rules>> {
        let t = run(c, rule_lookup!(), &[self.account.into(), customer.into(), event_type.into()])?;
        let mut rows = Vec::new();
        for row in t {
            rows.extend(rule_row(&row)?);
        }
        Ok(Rc::new(pick(rows)))
    }
}

// ---------------------------------------------------------------------------------
// One call, from the backend's cache (crate::cache says why it is safe)

/// A customer's prices for one event type, and the (account, customer) generations
/// they were read under.
type Subscribed = (Vec<Rc<SubscribedPrice>>, (i64, i64));
type SubscribedCache = credyt_core::cache::Owned<String, String, Rc<Vec<Rc<SubscribedPrice>>>, (i64, i64)>;
type CostCache = credyt_core::cache::Owned<String, String, Rc<Vec<Rc<ModelCost>>>>;
type RuleCache = credyt_core::cache::Owned<String, String, Rc<Rules>>;
type RuledCache = credyt_core::cache::Owned<String, String, bool>;

thread_local! {
    /// A customer's subscribed prices by event type, under (account, customer) generations.
    static SUBSCRIBED: RefCell<SubscribedCache> = Default::default();
    /// A model's costs by account, under the account's generation.
    static COSTS: RefCell<CostCache> = Default::default();
    /// The rules of a customer's events by event type, under the account's generation
    /// (rules and cohorts change it).
    static RULES: RefCell<RuleCache> = Default::default();
    /// Whether an account has any rule for an event type, under its generation: most
    /// have none, and their events then look up nothing per customer.
    static RULED: RefCell<RuledCache> = Default::default();
}

/// Drops the cached rules of a customer (read again at the next lookup).
pub(super) fn forget_rules(customer: &str) {
    RULES.with(|m| m.borrow_mut().check(&customer.to_string(), i64::MIN));
}

/// One call's lookups from the cache, noting the generations of what it used; the
/// charge checks them against the ones its wallet statement reads (Cached::fresh).
pub(super) struct Cached<'a> {
    pub(super) account: &'a str,
    account_gen: Option<i64>,
    customer_gen: Option<i64>,
    /// two values used were read under different generations
    mixed: bool,
}

impl<'a> Cached<'a> {
    pub(super) fn new(account: &'a str) -> Self {
        Cached { account, account_gen: None, customer_gen: None, mixed: false }
    }

    fn note(slot: &mut Option<i64>, mixed: &mut bool, gen: i64) {
        *mixed |= slot.is_some_and(|g| g != gen);
        *slot = Some(gen);
    }

    /// True when everything used was read under `gens`; otherwise forgets what is
    /// stale, for the call to look again.
    pub(super) fn fresh(&self, customer: &str, gens: &wallet::Gens, scope_gen: i64) -> bool {
        let mut fresh = !self.mixed;
        if scope_gen != gens.platform {
            crate::scope::check_scopes(gens.platform);
            fresh = false;
        }
        if self.account_gen.is_some_and(|g| g != gens.account) || self.mixed {
            customers::check_ids(self.account, gens.account);
            COSTS.with(|m| m.borrow_mut().check(&self.account.to_string(), gens.account));
            RULES.with(|m| m.borrow_mut().check(&customer.to_string(), gens.account));
            RULED.with(|m| m.borrow_mut().check(&self.account.to_string(), gens.account));
            fresh = false;
        }
        if self.customer_gen.is_some_and(|g| g != gens.customer) || !fresh {
            SUBSCRIBED.with(|m| m.borrow_mut().check(&customer.to_string(), (gens.account, gens.customer)));
            fresh = false;
        }
        fresh
    }
}

impl Lookups for Cached<'_> {
    fn customer(&mut self, c: &mut SpiClient<'_>, reference: &str) -> Result<String> {
        let (id, gen) = customers::resolve_cached(c, self.account, reference)?;
        Self::note(&mut self.account_gen, &mut self.mixed, gen);
        Ok(id)
    }
    fn prices(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>> {
        let owner = customer.to_string();
        let (prices, (ag, cg)) = match credyt_core::cache::get(&SUBSCRIBED, &owner, &event_type.to_string()) {
            Some(hit) => hit,
            None => {
                let (prices, gens) = subscribed_with_gens(c, self.account, customer, event_type)?;
                let prices = Rc::new(prices);
                credyt_core::cache::put(&SUBSCRIBED, &owner, gens, event_type.to_string(), prices.clone());
                (prices, gens)
            }
        };
        Self::note(&mut self.account_gen, &mut self.mixed, ag);
        Self::note(&mut self.customer_gen, &mut self.mixed, cg);
        Ok(prices.as_ref().clone())
    }
    fn model_costs(&mut self, c: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>> {
        let owner = self.account.to_string();
        let (costs, gen) = match credyt_core::cache::get(&COSTS, &owner, &model.to_string()) {
            Some(hit) => hit,
            None => {
                let (costs, gen) = model_costs_with_gen(c, self.account, model)?;
                let costs = Rc::new(costs);
                credyt_core::cache::put(&COSTS, &owner, gen, model.to_string(), costs.clone());
                (costs, gen)
            }
        };
        Self::note(&mut self.account_gen, &mut self.mixed, gen);
        Ok(costs.as_ref().clone())
    }
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str, at: i64) -> Result<Option<Decimal>> {
        // (rare, and by time: read each time, as Direct does)
        crate::assets::rate_at(c, self.account, asset, currency, wallet::time_at(at)?)
    }
    fn rules(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Rc<Rules>> {
        let account = self.account.to_string();
        let (ruled, gen) = match credyt_core::cache::get(&RULED, &account, &event_type.to_string()) {
            Some(hit) => hit,
            None => {
                let (ruled, gen) = ruled_with_gen(c, self.account, event_type)?;
                credyt_core::cache::put(&RULED, &account, gen, event_type.to_string(), ruled);
                (ruled, gen)
            }
        };
        Self::note(&mut self.account_gen, &mut self.mixed, gen);
        if !ruled {
            return Ok(Rc::default());
        }
        let owner = customer.to_string();
        let (rules, gen) = match credyt_core::cache::get(&RULES, &owner, &event_type.to_string()) {
            Some(hit) => hit,
            None => {
                let (rules, gen) = rules_with_gen(c, self.account, customer, event_type)?;
                let rules = Rc::new(rules);
                credyt_core::cache::put(&RULES, &owner, gen, event_type.to_string(), rules.clone());
                (rules, gen)
            }
        };
        Self::note(&mut self.account_gen, &mut self.mixed, gen);
        Ok(rules)
    }
}

/// The generations of the account and the customer, as one statement's first columns.
macro_rules! gens_row {
    () => {
        "SELECT g.account_gen, g.customer_gen, x.* FROM (SELECT \
           (SELECT catalog_gen FROM credyt.account WHERE id = $1) AS account_gen, \
           (SELECT catalog_gen FROM credyt.customer WHERE id = $2) AS customer_gen) g "
    };
}

/// gens_row!() for what only the account's generation guards: it reads no customer's
/// row (on Citus, no shard: the account is a reference table).
macro_rules! account_gen_row {
    () => {
        "SELECT g.account_gen, x.* FROM (SELECT (SELECT catalog_gen FROM credyt.account WHERE id = $1) AS account_gen) g "
    };
}

/// A customer's prices for an event type and the generations they were read under.
fn subscribed_with_gens(c: &mut SpiClient<'_>, account: &str, customer: &str, event_type: &str) -> Result<Subscribed> {
    let t = run(
        c,
        concat!(
            gens_row!(),
            "LEFT JOIN LATERAL (SELECT s.id AS subscription_id, ",
            price_columns!(),
            "FROM credyt.subscription s JOIN credyt.price p \
               ON p.product_id = s.product_id AND p.version = s.version AND p.event_type = $3 \
             WHERE s.customer_id = $2) x ON true ORDER BY x.subscription_id, x.position"
        ),
        &[account.into(), customer.into(), event_type.into()],
    )?;
    let mut gens = (-1, -1);
    let mut out = Vec::new();
    for row in t {
        gens = (row.opt::<i64>("account_gen")?.unwrap_or(-1), row.opt::<i64>("customer_gen")?.unwrap_or(-1));
        if row.opt::<String>("product_id")?.is_some() {
            out.push(subscribed_price(&row)?);
        }
    }
    Ok((out, gens))
}

/// Whether the account has rules for an event type, and the account generation that says so.
fn ruled_with_gen(c: &mut SpiClient<'_>, account: &str, event_type: &str) -> Result<(bool, i64)> {
    let t = run(
        c,
        concat!(
            account_gen_row!(),
            "CROSS JOIN (SELECT EXISTS (SELECT 1 FROM credyt.usage_rule WHERE account_id = $1 AND event_type = $2) AS ruled) x"
        ),
        &[account.into(), event_type.into()],
    )?;
    let row = t.first();
    Ok((row.req::<bool>("ruled")?, row.opt::<i64>("account_gen")?.unwrap_or(-1)))
}

/// The rules of a customer's events of a type, and the account generation they were read under.
fn rules_with_gen(c: &mut SpiClient<'_>, account: &str, customer: &str, event_type: &str) -> Result<(Rules, i64)> {
    let t = run(
        c,
        concat!(gens_row!(), "LEFT JOIN LATERAL (", rule_lookup!(), ") x ON true"),
        &[account.into(), customer.into(), event_type.into()],
    )?;
    let (mut gen, mut rows) = (-1, Vec::new());
    for row in t {
        gen = row.opt::<i64>("account_gen")?.unwrap_or(-1);
        rows.extend(rule_row(&row)?);
    }
    Ok((pick(rows), gen))
}

/// A model's costs, most recently set first, and the account generation they were read under.
fn model_costs_with_gen(c: &mut SpiClient<'_>, account: &str, model: &str) -> Result<(Vec<Rc<ModelCost>>, i64)> {
    let t = run(
        c,
        concat!(
            account_gen_row!(),
            "LEFT JOIN LATERAL (SELECT updated_at, ",
            model_cost_columns!(),
            "FROM credyt.model_cost WHERE account_id = $1 AND model = $2) x ON true ORDER BY x.updated_at DESC"
        ),
        &[account.into(), model.into()],
    )?;
    let mut gen = -1;
    let mut out = Vec::new();
    for row in t {
        gen = row.opt::<i64>("account_gen")?.unwrap_or(-1);
        if row.opt::<String>("vendor")?.is_some() {
            out.push(model_cost_row(&row)?);
        }
    }
    Ok((out, gen))
}

/// Subscribed prices by (customer id, event type).
type PricesByType = HashMap<(String, String), Vec<Rc<SubscribedPrice>>>;

/// A batch: everything its events need, read in four statements up front.
pub(super) struct Preloaded {
    account: String,
    pub(super) customers: HashMap<String, String>,
    prices: PricesByType,
    model_costs: HashMap<String, Vec<Rc<ModelCost>>>,
}

impl Preloaded {
    pub(super) fn load(c: &mut SpiClient<'_>, account: &str, events: &[Event]) -> Result<Preloaded> {
        let mut customers = Self::customers(c, account, events)?;
        // A billing portal session reaches its own customer only (as customers::resolve).
        if let Some(only) = crate::scope::portal_customer() {
            customers.retain(|_, id| *id == only);
        }
        let prices = Self::prices(c, &customers, events)?;
        let model_costs = Self::model_costs(c, account, events)?;
        Ok(Preloaded { account: account.to_string(), customers, prices, model_costs })
    }

    /// Customer id by each reference the events use (id or external_id).
    fn customers(c: &mut SpiClient<'_>, account: &str, events: &[Event]) -> Result<HashMap<String, String>> {
        let refs: Vec<String> =
            events.iter().map(|e| e.customer.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let mut customers = HashMap::new();
        let t = run_once(
            c,
            "SELECT ref, customer_id AS id FROM credyt.customer_ref WHERE account_id = $1 AND ref = ANY($2::text[])",
            &[account.into(), refs.into()],
        )?;
        for row in t {
            if let (Some(r), Some(id)) = (row.opt::<String>("ref")?, row.opt::<String>("id")?) {
                customers.insert(r, id);
            }
        }
        Ok(customers)
    }

    /// The subscribed prices of those customers for the events' types.
    fn prices(c: &mut SpiClient<'_>, customers: &HashMap<String, String>, events: &[Event]) -> Result<PricesByType> {
        let ids: Vec<String> =
            customers.values().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let types: Vec<String> = events
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut prices: PricesByType = HashMap::new();
        let t = run_once(
            c,
            concat!(
                "SELECT s.customer_id, p.event_type, ",
                price_columns!(),
                "FROM credyt.subscription s JOIN credyt.price p ON p.product_id = s.product_id AND p.version = s.version \
             WHERE s.customer_id = ANY($1) AND p.event_type = ANY($2) ORDER BY s.id, p.position"
            ),
            &[ids.into(), types.into()],
        )?;
        for row in t {
            let key = (row.req::<String>("customer_id")?, row.req::<String>("event_type")?);
            prices.entry(key).or_default().push(subscribed_price(&row)?);
        }
        Ok(prices)
    }

    /// The costs of the models the events name (and give no costs for).
    fn model_costs(
        c: &mut SpiClient<'_>,
        account: &str,
        events: &[Event],
    ) -> Result<HashMap<String, Vec<Rc<ModelCost>>>> {
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
                concat!(
                    "SELECT model, ",
                    model_cost_columns!(),
                    "FROM credyt.model_cost WHERE account_id = $1 AND model = ANY($2) ORDER BY updated_at DESC"
                ),
                &[account.into(), models.into()],
            )?;
            for row in t {
                model_costs.entry(row.req::<String>("model")?).or_default().push(model_cost_row(&row)?);
            }
        }
        Ok(model_costs)
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
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str, at: i64) -> Result<Option<Decimal>> {
        // (rare: revenue in a custom unit against a cost in a currency; rates change
        // over time, so each event reads the one of its moment)
        crate::assets::rate_at(c, &self.account, asset, currency, wallet::time_at(at)?)
    }
    fn rules(&mut self, _: &mut SpiClient<'_>, _: &str, _: &str) -> Result<Rc<Rules>> {
        // (a batch whose event types have rules takes the one-event path: none here)
        Ok(Rc::default())
    }
}
