//! What a charge looks up, kept per backend and checked against catalog generations:
//! the maps (the extension's scope, customers and usage keep their lookups in them).
//!
//! Why it is safe. Every change to a looked-up table sets a new generation in the
//! changing transaction (sql/025_generations.sql): on the platform rows for role
//! bindings, on the account row for products, prices, model costs, assets and
//! customer ids, on the customer row for its subscriptions. A value is cached with the
//! generation read by the statement that read the value (one snapshot), and a charge
//! uses it only after the statement that locks its wallet has read the generations
//! again and found them equal; otherwise it forgets the stale level and looks again.
//! Generations come from a sequence, so a value read inside a transaction that later
//! rolls back carries a generation that no committed row will ever hold. A backend is
//! single-threaded, so the maps need no lock; they are keyed by everything their values
//! depend on (the roles and settings for the scope, the account, the customer).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

/// Off where a backend cannot learn of every change: credyt distributed on Citus,
/// whose shards have no triggers to set generations (sql/080_distribute.sql). Then
/// get() finds nothing and every lookup is read afresh, in the call that uses it.
static ENABLED: AtomicBool = AtomicBool::new(true);

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Most entries one map keeps before it starts again empty: a backend that serves
/// many customers re-reads them rather than grow without bound. (Origin: an entry is
/// a few hundred bytes, so a full map is a few MB per backend; one customer's lookups
/// cost about 0.1 ms to read again.)
pub const MAX_ENTRIES: usize = 10_000;

/// A map whose entries were all read under one generation `G`.
pub struct GenMap<K, V, G = i64> {
    gen: Option<G>,
    map: HashMap<K, V>,
}

impl<K, V, G> Default for GenMap<K, V, G> {
    fn default() -> Self {
        GenMap { gen: None, map: HashMap::new() }
    }
}

impl<K: Eq + Hash, V: Clone, G: PartialEq + Copy> GenMap<K, V, G> {
    /// The value and the generation it was read under.
    pub fn get(&self, key: &K) -> Option<(V, G)> {
        let gen = self.gen?;
        self.map.get(key).map(|v| (v.clone(), gen))
    }

    /// Keeps a value read under `gen`; a newer generation forgets the older entries.
    pub fn put(&mut self, gen: G, key: K, value: V) {
        if self.gen != Some(gen) || self.map.len() >= MAX_ENTRIES {
            self.map.clear();
            self.gen = Some(gen);
        }
        self.map.insert(key, value);
    }

    /// Forgets everything unless it was read under `gen`. True when it was.
    pub fn check(&mut self, gen: G) -> bool {
        if self.gen == Some(gen) {
            return true;
        }
        self.map.clear();
        self.gen = None;
        false
    }
}

/// A GenMap per owner (an account, a customer), bounded as a whole.
pub struct Owned<O, K, V, G = i64> {
    owners: HashMap<O, GenMap<K, V, G>>,
}

impl<O, K, V, G> Default for Owned<O, K, V, G> {
    fn default() -> Self {
        Owned { owners: HashMap::new() }
    }
}

impl<O: Eq + Hash + Clone, K: Eq + Hash, V: Clone, G: PartialEq + Copy> Owned<O, K, V, G> {
    pub fn get(&self, owner: &O, key: &K) -> Option<(V, G)> {
        self.owners.get(owner)?.get(key)
    }

    pub fn put(&mut self, owner: &O, gen: G, key: K, value: V) {
        if !self.owners.contains_key(owner) && self.owners.len() >= MAX_ENTRIES {
            self.owners.clear();
        }
        self.owners.entry(owner.clone()).or_default().put(gen, key, value);
    }

    /// Forgets the owner's entries unless they were read under `gen`.
    pub fn check(&mut self, owner: &O, gen: G) -> bool {
        self.owners.get_mut(owner).is_none_or(|m| m.check(gen))
    }
}

/// A thread-local Owned map, used through a closure.
pub type Local<O, K, V, G = i64> = std::thread::LocalKey<RefCell<Owned<O, K, V, G>>>;

pub fn get<O, K, V, G>(local: &'static Local<O, K, V, G>, owner: &O, key: &K) -> Option<(V, G)>
where
    O: Eq + Hash + Clone,
    K: Eq + Hash,
    V: Clone,
    G: PartialEq + Copy,
{
    if !enabled() {
        return None;
    }
    local.with(|m| m.borrow().get(owner, key))
}

pub fn put<O, K, V, G>(local: &'static Local<O, K, V, G>, owner: &O, gen: G, key: K, value: V)
where
    O: Eq + Hash + Clone,
    K: Eq + Hash,
    V: Clone,
    G: PartialEq + Copy,
{
    if enabled() {
        local.with(|m| m.borrow_mut().put(owner, gen, key, value))
    }
}

pub fn check<O, K, V, G>(local: &'static Local<O, K, V, G>, owner: &O, gen: G) -> bool
where
    O: Eq + Hash + Clone,
    K: Eq + Hash,
    V: Clone,
    G: PartialEq + Copy,
{
    local.with(|m| m.borrow_mut().check(owner, gen))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_new_generation_forgets_the_old_entries() {
        let mut m: GenMap<&str, i32> = GenMap::default();
        m.put(1, "a", 10);
        assert_eq!(m.get(&"a"), Some((10, 1)));
        m.put(2, "b", 20);
        assert_eq!(m.get(&"a"), None);
        assert_eq!(m.get(&"b"), Some((20, 2)));
        assert!(m.check(2));
        assert!(!m.check(3));
        assert_eq!(m.get(&"b"), None);
    }

    #[test]
    fn owners_are_checked_apart() {
        let mut m: Owned<&str, &str, i32> = Owned::default();
        m.put(&"acct1", 5, "x", 1);
        m.put(&"acct2", 7, "x", 2);
        assert!(!m.check(&"acct1", 6));
        assert_eq!(m.get(&"acct1", &"x"), None);
        assert_eq!(m.get(&"acct2", &"x"), Some((2, 7)));
        assert!(m.check(&"unknown", 1));
    }

    thread_local! {
        static SWITCHED: RefCell<Owned<(), &'static str, i32>> = Default::default();
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        put(&SWITCHED, &(), 1, "a", 10);
        assert_eq!(get(&SWITCHED, &(), &"a"), Some((10, 1)));
        set_enabled(false);
        assert_eq!(get(&SWITCHED, &(), &"a"), None);
        put(&SWITCHED, &(), 2, "b", 20);
        set_enabled(true);
        assert_eq!(get(&SWITCHED, &(), &"b"), None, "nothing was kept while disabled");
        assert_eq!(get(&SWITCHED, &(), &"a"), Some((10, 1)));
    }
}
