//! A command's flag values with pflag's semantics: typed values parsed from strings with Go's
//! parsers, a `changed` mark for flags given on the command line (or taken from the
//! environment), and the error texts pflag produces.

use std::collections::BTreeMap;

use super::spec::{FlagKind, FlagSpec};
use crate::gofmt;

#[derive(Clone, Debug, PartialEq)]
pub enum FlagValue {
    Bool(bool),
    Str(String),
    Int(i64),
    /// Nanoseconds.
    Duration(i64),
    /// `given` is pflag's own mark: the first `Set` replaces the default, later ones append.
    Slice {
        items: Vec<String>,
        given: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Flag {
    pub spec: FlagSpec,
    pub value: FlagValue,
    /// Set on the command line or from the environment.
    pub changed: bool,
    /// Defined on the command itself, as opposed to inherited from a parent.
    pub local: bool,
}

impl Flag {
    fn new(spec: FlagSpec, local: bool) -> Self {
        let value = default_value(&spec);
        Flag {
            spec,
            value,
            changed: false,
            local,
        }
    }

    /// pflag's `NoOptDefVal`: the value a flag takes when given without one.
    pub fn no_opt_default(&self) -> Option<&'static str> {
        (self.spec.kind == FlagKind::Bool).then_some("true")
    }

    /// pflag's `Value.String()`.
    pub fn value_string(&self) -> String {
        match &self.value {
            FlagValue::Bool(b) => b.to_string(),
            FlagValue::Str(s) => s.clone(),
            FlagValue::Int(i) => i.to_string(),
            FlagValue::Duration(d) => gofmt::duration_string(*d),
            FlagValue::Slice { items, .. } => format!("[{}]", gofmt::write_csv_record(items)),
        }
    }

    /// pflag's `Value.Set`: on a parse error Go's value types still store what the parser
    /// returned (zero, or the clamped number), which matters when the environment sets a flag.
    fn set(&mut self, raw: &str) -> Result<(), String> {
        match &mut self.value {
            FlagValue::Bool(b) => {
                let parsed = gofmt::parse_bool(raw);
                *b = *parsed.as_ref().unwrap_or(&false);
                parsed.map(|_| ())
            }
            FlagValue::Str(s) => {
                *s = raw.to_string();
                Ok(())
            }
            FlagValue::Int(i) => match gofmt::parse_int(raw, 0) {
                Ok(v) => {
                    *i = v;
                    Ok(())
                }
                Err((v, e)) => {
                    *i = v;
                    Err(e.to_string())
                }
            },
            FlagValue::Duration(d) => match gofmt::parse_duration(raw) {
                Ok(v) => {
                    *d = v;
                    Ok(())
                }
                Err(e) => {
                    *d = 0;
                    Err(e)
                }
            },
            FlagValue::Slice { items, given } => {
                let parsed = gofmt::read_csv_record(raw)?;
                if *given {
                    items.extend(parsed);
                } else {
                    *items = parsed;
                }
                *given = true;
                Ok(())
            }
        }
    }

    /// pflag's `defaultIsZeroValue`, which decides whether usage prints `(default ...)`.
    pub fn default_is_zero(&self) -> bool {
        match self.spec.kind {
            FlagKind::Bool => self.spec.default == "false",
            FlagKind::String => self.spec.default.is_empty(),
            FlagKind::Int64 => self.spec.default == "0",
            FlagKind::Duration => self.spec.default == "0" || self.spec.default == "0s",
            FlagKind::StringSlice => self.spec.default == "[]",
        }
    }
}

fn default_value(spec: &FlagSpec) -> FlagValue {
    match spec.kind {
        FlagKind::Bool => FlagValue::Bool(spec.default == "true"),
        FlagKind::String => FlagValue::Str(spec.default.to_string()),
        FlagKind::Int64 => FlagValue::Int(spec.default.parse().unwrap_or(0)),
        FlagKind::Duration => FlagValue::Duration(gofmt::parse_duration(spec.default).unwrap_or(0)),
        FlagKind::StringSlice => {
            let inner = spec.default.trim_start_matches('[').trim_end_matches(']');
            FlagValue::Slice {
                items: gofmt::read_csv_record(inner).unwrap_or_default(),
                given: false,
            }
        }
    }
}

/// The flags one command sees: its own, its ancestors' persistent ones and `--help`, sorted by
/// name as pflag visits them.
#[derive(Clone, Debug, Default)]
pub struct FlagSet {
    flags: BTreeMap<&'static str, Flag>,
}

impl FlagSet {
    pub fn add(&mut self, spec: &FlagSpec, local: bool) {
        // A flag defined closer to the command wins, as in cobra's merge.
        self.flags
            .entry(spec.name)
            .or_insert_with(|| Flag::new(spec.clone(), local));
    }

    pub fn lookup(&self, name: &str) -> Option<&Flag> {
        self.flags.get(name)
    }

    pub fn lookup_shorthand(&self, c: u8) -> Option<&Flag> {
        self.flags.values().find(|f| f.spec.shorthand == Some(c))
    }

    /// All flags in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values()
    }

    /// pflag's `FlagSet.Set`, with its error text.
    pub fn set(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let Some(flag) = self.flags.get_mut(name) else {
            return Err(format!("no such flag -{name}"));
        };
        if let Err(e) = flag.set(raw) {
            let flag_name = match flag.spec.shorthand {
                Some(c) => format!("-{}, --{}", c as char, flag.spec.name),
                None => format!("--{}", flag.spec.name),
            };
            return Err(format!(
                "invalid argument {} for {} flag: {e}",
                gofmt::quote(raw.as_bytes()),
                gofmt::quote(flag_name.as_bytes())
            ));
        }
        flag.changed = true;
        Ok(())
    }

    pub fn changed(&self, name: &str) -> bool {
        self.flags.get(name).is_some_and(|f| f.changed)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.value(name), Some(FlagValue::Bool(true)))
    }

    pub fn string(&self, name: &str) -> String {
        match self.value(name) {
            Some(FlagValue::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            Some(FlagValue::Int(i)) => *i,
            _ => 0,
        }
    }

    /// A duration flag, in nanoseconds.
    pub fn duration(&self, name: &str) -> i64 {
        match self.value(name) {
            Some(FlagValue::Duration(d)) => *d,
            _ => 0,
        }
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.value(name) {
            Some(FlagValue::Slice { items, .. }) => items.clone(),
            _ => Vec::new(),
        }
    }

    fn value(&self, name: &str) -> Option<&FlagValue> {
        self.flags.get(name).map(|f| &f.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(specs: &[FlagSpec]) -> FlagSet {
        let mut fs = FlagSet::default();
        for s in specs {
            fs.add(s, true);
        }
        fs
    }

    #[test]
    fn values_and_errors_follow_pflag() {
        let mut fs = set_of(&[
            FlagSpec {
                name: "limit",
                shorthand: None,
                kind: FlagKind::Int64,
                default: "0",
                usage: "".into(),
            },
            FlagSpec {
                name: "write-out",
                shorthand: Some(b'w'),
                kind: FlagKind::String,
                default: "simple",
                usage: "".into(),
            },
            FlagSpec {
                name: "endpoints",
                shorthand: None,
                kind: FlagKind::StringSlice,
                default: "[127.0.0.1:2379]",
                usage: "".into(),
            },
            FlagSpec {
                name: "dial-timeout",
                shorthand: None,
                kind: FlagKind::Duration,
                default: "2s",
                usage: "".into(),
            },
        ]);
        assert_eq!(fs.strings("endpoints"), vec!["127.0.0.1:2379"]);
        assert_eq!(fs.duration("dial-timeout"), 2_000_000_000);
        assert_eq!(
            fs.set("limit", "x").unwrap_err(),
            "invalid argument \"x\" for \"--limit\" flag: strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        fs.set("endpoints", "a,b").unwrap();
        fs.set("endpoints", "c").unwrap();
        assert_eq!(fs.strings("endpoints"), vec!["a", "b", "c"]);
        assert_eq!(fs.lookup("endpoints").unwrap().value_string(), "[a,b,c]");
        assert_eq!(
            fs.set("dial-timeout", "xx").unwrap_err(),
            "invalid argument \"xx\" for \"--dial-timeout\" flag: time: invalid duration \"xx\""
        );
        assert_eq!(fs.duration("dial-timeout"), 0);
        fs.set("write-out", "json").unwrap();
        assert!(fs.changed("write-out"));
        assert_eq!(fs.lookup_shorthand(b'w').unwrap().spec.name, "write-out");
    }
}
