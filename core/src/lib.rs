//! Postgres-free logic shared by the credyt extension and the worker:
//! identifiers, money rules, the burn-down order and the fiat table.
//! Everything here is pure and tested in milliseconds (`cargo test -p credyt-core`).

pub mod burndown;
pub mod fiat;
pub mod ids;
pub mod money;
pub mod pricing;
