//! The SPI layer every domain reads and writes through: kept plans (`plan`) and rows
//! decoded by column name (`row`). Imports no domain.

mod plan;
mod row;

pub use plan::{one, run, run_once};
pub use row::Row;
