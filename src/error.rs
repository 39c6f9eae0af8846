//! Domain errors: SQLSTATE class `CY` (SPEC §12), a message naming the object,
//! and a DETAIL or HINT.
//!
//! pgrx re-raises errors through `PgSqlErrorCode`, which only knows the standard
//! codes and turns any other into XX000. So a domain error travels as a Rust value
//! (`Result<_, CyError>`) up to the API boundary, where [`api`] raises it with
//! Postgres' own `errstart`/`errfinish`. By then every Rust value of the call has
//! been dropped (the API closures take their arguments by move), so the longjmp
//! crosses only frames with nothing left to drop, exactly as pgrx's own
//! `do_ereport` does.

use std::ffi::CString;
use std::fmt::Display;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// invalid argument
    Invalid,
    /// no valid API key (credyt-server's role before credyt.authenticate)
    Unauthenticated,
    /// outside the account in scope
    Forbidden,
    /// unknown object
    NotFound,
    /// over the overdraft limit
    InsufficientFunds,
    /// idempotency key reused with a different payload (or a unique name taken)
    Conflict,
    /// too late (hold expired, settlement window closed)
    Gone,
    /// a usage limit refused the event (credyt.usage_limit_error = on)
    TooManyRequests,
    /// not a domain error: a bug
    Internal,
}

impl Code {
    pub fn sqlstate(self) -> &'static str {
        match self {
            Code::Invalid => "CY400",
            Code::Unauthenticated => "CY401",
            Code::Forbidden => "CY403",
            Code::NotFound => "CY404",
            Code::InsufficientFunds => "CY402",
            Code::Conflict => "CY409",
            Code::Gone => "CY410",
            Code::TooManyRequests => "CY429",
            Code::Internal => "XX000",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CyError {
    pub code: Code,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, CyError>;

impl CyError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CyError { code, message: message.into(), detail: None, hint: None }
    }
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }
    pub fn insufficient(message: impl Into<String>) -> Self {
        Self::new(Code::InsufficientFunds, message)
    }

    /// An internal failure (a bug, or SPI misuse): raised as XX000, not as a
    /// domain error.
    pub fn internal(e: impl Display) -> Self {
        Self::new(Code::Internal, format!("credyt internal error: {e}"))
            .detail("this is a bug in credyt; please report it")
    }

    /// Raises this error as a Postgres ERROR with its CY SQLSTATE. Never returns.
    pub fn raise(self) -> ! {
        let sqlstate = encode_sqlstate(self.code.sqlstate());
        let message = cstring(self.message);
        let detail = self.detail.map(cstring);
        let hint = self.hint.map(cstring);
        // errmsg/errdetail/errhint copy their text into the error context, so the
        // CStrings may be dropped before errfinish() jumps away.
        unsafe {
            if raw::errstart(pgrx::PgLogLevel::ERROR as _, std::ptr::null()) {
                raw::errcode(sqlstate);
                raw::errmsg(c"%s".as_ptr(), message.as_ptr());
                if let Some(d) = &detail {
                    raw::errdetail(c"%s".as_ptr(), d.as_ptr());
                }
                if let Some(h) = &hint {
                    raw::errhint(c"%s".as_ptr(), h.as_ptr());
                }
                drop(message);
                drop(detail);
                drop(hint);
                raw::errfinish(c"credyt".as_ptr(), 0, std::ptr::null());
            }
        }
        // errstart(ERROR) always returns true and errfinish(ERROR) never returns.
        unreachable!("ERROR did not longjmp")
    }
}

fn cstring(s: String) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// MAKE_SQLSTATE from the five characters of a SQLSTATE.
fn encode_sqlstate(s: &str) -> i32 {
    s.bytes().enumerate().fold(0i32, |acc, (i, ch)| acc | ((((ch - b'0') & 0x3F) as i32) << (6 * i)))
}

/// Unguarded declarations: the point is that errfinish() longjmps straight to
/// Postgres' handler instead of being turned into a Rust panic by pgrx.
mod raw {
    use std::os::raw::{c_char, c_int};
    unsafe extern "C-unwind" {
        pub fn errstart(elevel: c_int, domain: *const c_char) -> bool;
        pub fn errcode(sqlerrcode: c_int) -> c_int;
        pub fn errmsg(fmt: *const c_char, ...) -> c_int;
        pub fn errdetail(fmt: *const c_char, ...) -> c_int;
        pub fn errhint(fmt: *const c_char, ...) -> c_int;
        pub fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
    }
}

/// Runs an API body and raises its domain error, if any, with the CY SQLSTATE.
/// The closure owns everything it uses, so nothing is left to drop when an error
/// longjmps out.
pub fn api<T>(f: impl FnOnce() -> Result<T>) -> T {
    let r = f();
    match r {
        Ok(v) => v,
        Err(e) => e.raise(),
    }
}

impl From<pgrx::spi::SpiError> for CyError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        CyError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlstate_encoding_matches_make_sqlstate() {
        // ERRCODE_UNIQUE_VIOLATION is 23505
        // '2' - '0' = 2, '3' = 3, '5' = 5, '0' = 0, '5' = 5, six bits each
        let expected = 2 | (3 << 6) | (5 << 12) | (5 << 24);
        assert_eq!(super::encode_sqlstate("23505"), expected);
    }
}
