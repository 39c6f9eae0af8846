//! Structured logs: one JSON object per line on stderr, with `ts` (Unix seconds),
//! `level`, `msg` and the fields of the occasion.

use serde_json::{Map, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

pub fn line(level: &str, msg: &str, fields: &[(&str, Value)]) -> String {
    let mut m = Map::new();
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    m.insert("ts".into(), Value::from((ts * 1000.0).round() / 1000.0));
    m.insert("level".into(), level.into());
    m.insert("msg".into(), msg.into());
    for (k, v) in fields {
        m.insert((*k).into(), v.clone());
    }
    Value::Object(m).to_string()
}

pub fn emit(level: &str, msg: &str, fields: &[(&str, Value)]) {
    if level == "debug" && !debug_enabled() {
        return;
    }
    let mut err = std::io::stderr().lock();
    // A log line that cannot be written is not worth failing a delivery over.
    let _ = writeln!(err, "{}", line(level, msg, fields));
}

#[macro_export]
macro_rules! log {
    ($level:literal, $msg:expr $(, $k:literal => $v:expr)* $(,)?) => {
        $crate::log::emit($level, $msg, &[$(($k, serde_json::Value::from($v))),*])
    };
}

/// An error and its sources, in a line: the outer messages of reqwest and tokio-postgres
/// are generic ("error sending request", "error performing TLS handshake").
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_is_one_json_object() {
        let l = super::line("warn", "attempt failed", &[("event_id", "whe_1".into()), ("status", 500.into())]);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "attempt failed");
        assert_eq!(v["event_id"], "whe_1");
        assert_eq!(v["status"], 500);
        assert!(!l.contains('\n'));
    }
}
