//! Rows read by column name. A value that is missing, NULL where a value is required,
//! or of another type than the reader asks for is an internal error that names the
//! column, never a silent `""` or zero.
//!
//! A statement's columns never change (every statement is a constant), so the
//! ordinal of a column is looked up by name once per backend and statement, then
//! kept: reading by name costs what reading by position did.

use super::AddrMap;
use crate::error::{CyError, Result};
use pgrx::spi::{SpiError, SpiErrorCodes, SpiHeapTupleData, SpiTupleTable};
use pgrx::{FromDatum, IntoDatum};
use std::cell::RefCell;

thread_local! {
    /// (statement address, column name address) → ordinal.
    static ORDINALS: RefCell<AddrMap<(usize, usize), usize>> = RefCell::new(AddrMap::default());
}

/// The result of one statement: its rows, and which statement it was.
pub struct Table<'conn> {
    pub(super) inner: SpiTupleTable<'conn>,
    pub(super) sql: &'static str,
}

impl<'conn> Table<'conn> {
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Positioned at the first row, to read it with the Row methods.
    pub fn first(self) -> Self {
        Table { inner: self.inner.first(), sql: self.sql }
    }
}

/// One row of an iteration over a Table.
pub struct TableRow<'conn> {
    row: SpiHeapTupleData<'conn>,
    sql: &'static str,
}

impl<'conn> Iterator for Table<'conn> {
    type Item = TableRow<'conn>;

    fn next(&mut self) -> Option<TableRow<'conn>> {
        self.inner.next().map(|row| TableRow { row, sql: self.sql })
    }
}

/// What credyt reads from a result row: the current row of a table (`table.first()`)
/// or a row of an iteration (`for row in table`).
pub trait Row {
    /// The statement the row came from.
    fn sql(&self) -> &'static str;
    /// The raw read by ordinal (1-based), as pgrx gives it.
    fn at<T: IntoDatum + FromDatum>(&self, ordinal: usize) -> std::result::Result<Option<T>, SpiError>;
    /// The ordinal of a column, looked up by name.
    fn lookup(&self, column: &str) -> std::result::Result<usize, SpiError>;

    /// The column's value, or None where it is NULL.
    fn opt<T: IntoDatum + FromDatum>(&self, column: &'static str) -> Result<Option<T>> {
        let key = (self.sql().as_ptr() as usize, column.as_ptr() as usize);
        let ordinal = match ORDINALS.with(|o| o.borrow().get(&key).copied()) {
            Some(i) => i,
            None => {
                let i = self.lookup(column).map_err(|e| named(column, e))?;
                ORDINALS.with(|o| o.borrow_mut().insert(key, i));
                i
            }
        };
        self.at(ordinal).map_err(|e| named(column, e))
    }

    /// The column's value, which must not be NULL.
    fn req<T: IntoDatum + FromDatum>(&self, column: &'static str) -> Result<T> {
        self.opt(column)?.ok_or_else(|| CyError::internal(format!("column {column} is NULL")))
    }

    /// An amount the ledger stored (selected as text, so that no digit is lost).
    fn amount(&self, column: &'static str) -> Result<rust_decimal::Decimal> {
        crate::money::stored(&self.req::<String>(column)?)
    }

    /// An amount that may be NULL.
    fn opt_amount(&self, column: &'static str) -> Result<Option<rust_decimal::Decimal>> {
        self.opt::<String>(column)?.map(|s| crate::money::stored(&s)).transpose()
    }

    /// The column's text parsed into one of a fixed vocabulary (an enum's `parse`).
    fn vocab<T>(&self, column: &'static str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
        let text = self.req::<String>(column)?;
        parse(&text)
            .ok_or_else(|| CyError::internal(format!("column {column} holds {text:?}, which is not a known value")))
    }
}

fn named(column: &str, e: SpiError) -> CyError {
    match e {
        SpiError::SpiError(SpiErrorCodes::NoAttribute) => CyError::internal(format!("the row has no column {column}")),
        e => CyError::internal(format!("column {column}: {e}")),
    }
}

impl Row for Table<'_> {
    fn sql(&self) -> &'static str {
        self.sql
    }
    fn at<T: IntoDatum + FromDatum>(&self, ordinal: usize) -> std::result::Result<Option<T>, SpiError> {
        self.inner.get(ordinal)
    }
    fn lookup(&self, column: &str) -> std::result::Result<usize, SpiError> {
        self.inner.column_ordinal(column)
    }
}

impl Row for TableRow<'_> {
    fn sql(&self) -> &'static str {
        self.sql
    }
    fn at<T: IntoDatum + FromDatum>(&self, ordinal: usize) -> std::result::Result<Option<T>, SpiError> {
        self.row.get(ordinal)
    }
    fn lookup(&self, column: &str) -> std::result::Result<usize, SpiError> {
        // (SpiHeapTupleData offers no ordinal lookup: find the entry by name, then the
        // ordinal that gives that very entry)
        let entry = self.row.get_datum_by_name(column)?;
        (1..=self.row.columns())
            .find(|&i| self.row.get_datum_by_ordinal(i).is_ok_and(|e| std::ptr::eq(e, entry)))
            .ok_or(SpiError::SpiError(SpiErrorCodes::NoAttribute))
    }
}
