//! Command-line flags in etcd benchmark's (cobra) style: `--name=value` or `--name value`,
//! global flags before or after the scenario name, boolean flags without a value.
//!
//! Hand-written rather than clap: the whole grammar is a dozen lines, and each scenario knows
//! its own flags and defaults, which it reads with [`Flags::get`] after [`Flags::allow`] has
//! rejected anything it does not know.

use std::collections::HashMap;
use std::str::FromStr;

/// Flags that never take a value; every other flag does.
const BOOLEAN_FLAGS: &[&str] = &[
    "sequential-keys",
    "json",
    "count-only",
    "quick",
    "help",
    "insecure-skip-tls-verify",
];

/// Flags every scenario accepts.
pub const GLOBAL_FLAGS: &[&str] = &[
    "endpoints",
    "conns",
    "clients",
    "cacert",
    "cert",
    "key",
    "json",
    "target-name",
    "help",
];

#[derive(Debug, Default)]
pub struct Flags {
    values: HashMap<String, String>,
    /// Scenario name first, then its arguments (`range <key> [end]`).
    pub positionals: Vec<String>,
}

impl Flags {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
        let mut flags = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--").or_else(|| {
                arg.strip_prefix('-')
                    .filter(|b| b.len() > 1 && !b.starts_with(|c: char| c.is_ascii_digit()))
            }) else {
                flags.positionals.push(arg);
                continue;
            };
            if body.is_empty() {
                flags.positionals.extend(args.by_ref());
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None if BOOLEAN_FLAGS.contains(&body) => (body.to_string(), "true".to_string()),
                None => {
                    let v = args
                        .next()
                        .ok_or_else(|| format!("flag needs an argument: --{body}"))?;
                    (body.to_string(), v)
                }
            };
            flags.values.insert(name, value);
        }
        Ok(flags)
    }

    /// Fails on any flag that is neither global nor in `scenario_flags`.
    pub fn allow(&self, scenario_flags: &[&str]) -> Result<(), String> {
        for name in self.values.keys() {
            if !GLOBAL_FLAGS.contains(&name.as_str()) && !scenario_flags.contains(&name.as_str()) {
                return Err(format!("unknown flag: --{name}"));
            }
        }
        Ok(())
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| format!("invalid value {v:?} for --{name}: {e}")),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn opt(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn bool(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v != "false")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Flags {
        Flags::parse(s.split_whitespace().map(String::from)).unwrap()
    }

    #[test]
    fn global_flags_before_and_after_the_scenario() {
        let f = parse("--conns=10 put --clients 100 --sequential-keys --total=5 --json");
        assert_eq!(f.positionals, vec!["put"]);
        assert_eq!(f.get("conns", 1usize).unwrap(), 10);
        assert_eq!(f.get("clients", 1usize).unwrap(), 100);
        assert_eq!(f.get("total", 0u64).unwrap(), 5);
        assert!(f.bool("sequential-keys") && f.bool("json"));
        assert!(f.allow(&["total", "sequential-keys"]).is_ok());
        assert!(f.allow(&["total"]).is_err());
    }

    #[test]
    fn range_positionals() {
        let f = parse("range foo fop --consistency s");
        assert_eq!(f.positionals, vec!["range", "foo", "fop"]);
        assert_eq!(f.string("consistency", "l"), "s");
    }
}
