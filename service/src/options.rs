//! Command-line options of credyt's services, each with an environment variable
//! beside it.

use credyt_core::webhook::parse_duration;
use std::process::ExitCode;
use std::time::Duration;

/// What reading the options came to: a configuration to run with, or text to print
/// and exit (--help, --version).
pub enum Parsed<C> {
    Run(C),
    Exit(String),
}

/// A program's option parser: arguments (without the program name) and a lookup of
/// environment variables.
pub type Parser<C> = fn(&[String], &dyn Fn(&str) -> Option<String>) -> Result<Parsed<C>, String>;

/// The configuration from the process's arguments and environment; --help and
/// --version print and exit 0, a bad option prints why and exits 2.
pub fn from_process<C>(program: &str, parse: Parser<C>) -> Result<C, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args, &|k| std::env::var(k).ok()) {
        Ok(Parsed::Run(c)) => Ok(c),
        Ok(Parsed::Exit(text)) => {
            println!("{text}");
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The multi-threaded runtime both services run on (the reason logged if it cannot start).
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        crate::log!("error", "cannot start the runtime", "error" => e.to_string());
        ExitCode::FAILURE
    })
}

/// For tests: `parse` over literal arguments and environment variables; --help and
/// --version come back as Err("exit: ...").
pub fn parse_literal<C>(parse: Parser<C>, args: &[&str], env: &[(&str, &str)]) -> Result<C, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    match parse(&args, &lookup)? {
        Parsed::Run(c) => Ok(c),
        Parsed::Exit(s) => Err(format!("exit: {s}")),
    }
}

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

    /// `--database-url` or DATABASE_URL, required.
    pub fn database_url(&self) -> Result<String, String> {
        self.get("database-url", "DATABASE_URL")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "no database: pass --database-url or set DATABASE_URL".to_string())
    }

    /// A whole number in `range`, or `default`.
    pub fn number(
        &self,
        name: &str,
        var: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, String> {
        match self.get(name, var) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| format!("--{name}: {v:?} is not a number from {} to {}", range.start(), range.end())),
        }
    }

    /// `--log-level`: info (false) or debug (true).
    pub fn debug(&self, var: &str) -> Result<bool, String> {
        match self.get("log-level", var).as_deref() {
            None | Some("info") => Ok(false),
            Some("debug") => Ok(true),
            Some(v) => Err(format!("--log-level: {v:?} is not info or debug")),
        }
    }

    pub fn duration(&self, name: &str, var: &str, default: Duration) -> Result<Duration, String> {
        match self.get(name, var) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| format!("--{name}: {e}")),
        }
    }
}
