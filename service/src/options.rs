//! Command-line options of credyt's services, each with an environment variable
//! beside it.

use credyt_core::webhook::parse_duration;
use std::time::Duration;

/// Command-line options (`--name value` or `--name=value`; the last one wins), each
/// falling back to an environment variable.
pub struct Options<E: Fn(&str) -> Option<String>> {
    flags: Vec<(String, String)>,
    env: E,
}

impl<E: Fn(&str) -> Option<String>> Options<E> {
    /// Reads `args` against the options a program knows; Err(Ok(text)) for --help
    /// (`usage`) and --version (`version`), Err(Err(why)) for bad input.
    pub fn read(
        args: &[String],
        env: E,
        known: &[&str],
        usage: &str,
        version: &str,
    ) -> Result<Self, Result<String, String>> {
        let mut flags: Vec<(String, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--help" | "-h" => return Err(Ok(usage.to_string())),
                "--version" | "-V" => return Err(Ok(version.to_string())),
                _ => {}
            }
            let Some(name) = a.strip_prefix("--") else {
                return Err(Err(format!("unexpected argument {a:?}; see --help")));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (name.to_string(), it.next().ok_or_else(|| Err(format!("--{name} needs a value")))?.clone()),
            };
            flags.push((name, value));
        }
        if let Some((n, _)) = flags.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            return Err(Err(format!("unknown option --{n}; see --help")));
        }
        Ok(Options { flags, env })
    }

    pub fn get(&self, name: &str, var: &str) -> Option<String> {
        self.flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone()).or_else(|| (self.env)(var))
    }

    pub fn duration(&self, name: &str, var: &str, default: Duration) -> Result<Duration, String> {
        match self.get(name, var) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| format!("--{name}: {e}")),
        }
    }
}
