//! Rows read by column name. A value that is missing, NULL where a value is required,
//! or of another type than the reader asks for is an internal error that names the
//! column, never a silent `""` or zero.

use crate::error::{CyError, Result};
use pgrx::spi::{SpiError, SpiErrorCodes, SpiHeapTupleData, SpiTupleTable};
use pgrx::{FromDatum, IntoDatum};

/// What credyt reads from a result row: the current row of a table (`table.first()`)
/// or a row of an iteration (`for row in table`).
pub trait Row {
    /// The raw read, as pgrx gives it.
    fn by_name<T: IntoDatum + FromDatum>(&self, column: &str) -> std::result::Result<Option<T>, SpiError>;

    /// The column's value, or None where it is NULL.
    fn opt<T: IntoDatum + FromDatum>(&self, column: &str) -> Result<Option<T>> {
        self.by_name(column).map_err(|e| match e {
            SpiError::SpiError(SpiErrorCodes::NoAttribute) => {
                CyError::internal(format!("the row has no column {column}"))
            }
            e => CyError::internal(format!("column {column}: {e}")),
        })
    }

    /// The column's value, which must not be NULL.
    fn req<T: IntoDatum + FromDatum>(&self, column: &str) -> Result<T> {
        self.opt(column)?.ok_or_else(|| CyError::internal(format!("column {column} is NULL")))
    }

    /// The column's text parsed into one of a fixed vocabulary (an enum's `parse`).
    fn vocab<T>(&self, column: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
        let text = self.req::<String>(column)?;
        parse(&text)
            .ok_or_else(|| CyError::internal(format!("column {column} holds {text:?}, which is not a known value")))
    }
}

impl Row for SpiTupleTable<'_> {
    fn by_name<T: IntoDatum + FromDatum>(&self, column: &str) -> std::result::Result<Option<T>, SpiError> {
        self.get_by_name(column)
    }
}

impl Row for SpiHeapTupleData<'_> {
    fn by_name<T: IntoDatum + FromDatum>(&self, column: &str) -> std::result::Result<Option<T>, SpiError> {
        self.get_by_name(column)
    }
}
