//! jsonb arguments, checked at the edge.
//!
//! pgrx's own `JsonB` argument parses the value into serde_json before the function
//! body runs and panics when that fails: a value nested 128 levels deep (serde_json's
//! recursion limit) reached clients as XX000 with a Rust backtrace in DETAIL. An
//! argument of type [`Json`] is only the value's text when the call starts; the body
//! checks its size and depth with [`Json::value`], which names the argument in a CY400,
//! and only then parses it.

use crate::error::{CyError, Result};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::{direct_function_call, pg_sys, FromDatum};
use serde_json::Value;

/// Deepest nesting any credyt argument accepts. Credyt's own shapes nest at most six
/// levels (a price's dimensional values); 32 leaves room for client metadata, far
/// below serde_json's recursion limit of 128.
pub const MAX_DEPTH: usize = 32;

/// Largest jsonb argument but a batch: prices, entitlements, usage data and costs (and
/// metadata, which then has its own 16 KiB limit). (Origin: a product's whole price
/// list with hundreds of dimensional values is tens of KiB; 1 MiB leaves room.)
pub const MAX_BYTES: usize = 1 << 20;

/// Largest batch of usage events (`record_usage(events jsonb)`). (Origin: MAX_BATCH
/// events of a few KiB each.)
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// A jsonb argument, as the text Postgres prints for it, and the argument's own datum
/// (valid for the call), so that a value stored unchanged is not encoded again.
pub struct Json(String, pg_sys::Datum);

impl FromDatum for Json {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Json> {
        if is_null {
            return None;
        }
        // jsonb_out prints any jsonb value (detoasting it first), in the call's memory
        // context; the copy is ours and the C string is freed.
        unsafe {
            let cstr = direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])?;
            let text = cstr.to_string_lossy().into_owned();
            pg_sys::pfree(cstr.as_ptr() as *mut core::ffi::c_void);
            Some(Json(text, datum))
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for Json {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

/// (in a module of its own: the macro's expansion names `Result` unqualified)
mod sql_type {
    pgrx::impl_sql_translatable!(super::Json, arg_only = "jsonb");
}

impl Json {
    /// The parsed value, once it is known to be at most `max_bytes` long and
    /// [`MAX_DEPTH`] deep; `param` names the argument in the error.
    pub fn value(&self, param: &str, max_bytes: usize) -> Result<Value> {
        if self.0.len() > max_bytes {
            return Err(CyError::invalid(format!("{param} is too large"))
                .detail(format!("{} bytes of JSON, at most {max_bytes} accepted", self.0.len())));
        }
        let depth = depth(&self.0);
        if depth > MAX_DEPTH {
            return Err(CyError::invalid(format!("{param} is nested too deeply"))
                .detail(format!("{depth} levels of arrays and objects, at most {MAX_DEPTH} accepted")));
        }
        serde_json::from_str(&self.0).map_err(|e| CyError::invalid(format!("{param} is not valid JSON: {e}")))
    }
}

/// The largest nesting of arrays and objects in JSON text (brackets inside strings do
/// not count).
pub fn depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// An optional jsonb argument's value (None stays None).
pub fn optional(param: &str, v: Option<Json>, max_bytes: usize) -> Result<Option<Value>> {
    v.map(|j| j.value(param, max_bytes)).transpose()
}

/// optional() with the argument's datum beside the value: what the call may store as
/// the jsonb it was given, valid until the call returns.
pub fn optional_with_datum(param: &str, v: Option<Json>, max_bytes: usize) -> Result<Option<(Value, pg_sys::Datum)>> {
    v.map(|j| Ok((j.value(param, max_bytes)?, j.1))).transpose()
}

/// A required jsonb argument's value.
pub fn required(param: &str, v: Option<Json>, max_bytes: usize) -> Result<Value> {
    optional(param, v, max_bytes)?.ok_or_else(|| CyError::invalid(format!("{param} must not be NULL")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(super::depth(r#"{"a": [1, {"b": "[[[{"}]}"#), 3);
        assert_eq!(super::depth(r#"["\"[", "\\", []]"#), 2);
        assert_eq!(super::depth("1"), 0);
    }
}
