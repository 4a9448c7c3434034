//! Value kinds of etcd's flags. A kind says how one flag's text (command line or `ETCD_*`)
//! and its YAML value become a typed value, and how the value prints. Each kind mirrors the
//! Go type etcd declares the flag with (`uint`, `time.Duration`, `flags.UniqueURLs`, ...), so a
//! value is accepted or refused as etcd would, with etcd's reason.

use serde_yaml_ng::Value as Yaml;

use crate::goparse::{self, NumError};

pub trait Kind {
    type Value: Clone + PartialEq + std::fmt::Debug;
    /// Go's boolean flags take no separate argument: `--enable-v2` means true, and only
    /// `--enable-v2=false` turns it off.
    const IS_BOOL: bool = false;
    /// The value of `text`; `current` is the value before (`None` when building the default).
    fn parse(text: &str, current: Option<&Self::Value>) -> Result<Self::Value, String>;
    /// The value of a YAML node. etcd decodes YAML through JSON into Go types, so numbers must
    /// be numbers, durations are integer nanoseconds, and strings take any scalar.
    fn from_yaml(node: &Yaml, current: Option<&Self::Value>) -> Result<Self::Value, String>;
    /// The value as a flag would spell it.
    fn show(value: &Self::Value) -> String;
}

fn yaml_type(node: &Yaml) -> &'static str {
    match node {
        Yaml::Null => "null",
        Yaml::Bool(_) => "bool",
        Yaml::Number(_) => "number",
        Yaml::String(_) => "string",
        Yaml::Sequence(_) => "list",
        Yaml::Mapping(_) => "mapping",
        Yaml::Tagged(_) => "tagged value",
    }
}

fn expected(what: &str, node: &Yaml) -> String {
    format!("cannot use a {} as {what}", yaml_type(node))
}

/// A string (`fs.StringVar`).
pub struct Str;
impl Kind for Str {
    type Value = String;
    fn parse(text: &str, _: Option<&String>) -> Result<String, String> {
        Ok(text.to_string())
    }
    fn from_yaml(node: &Yaml, _: Option<&String>) -> Result<String, String> {
        // etcd's YAML decoder turns any scalar into the string a string field asks for.
        match node {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Number(n) => Ok(n.to_string()),
            Yaml::Bool(b) => Ok(b.to_string()),
            other => Err(expected("a string", other)),
        }
    }
    fn show(value: &String) -> String {
        value.clone()
    }
}

/// A boolean (`fs.BoolVar`).
pub struct Bool;
impl Kind for Bool {
    type Value = bool;
    const IS_BOOL: bool = true;
    fn parse(text: &str, _: Option<&bool>) -> Result<bool, String> {
        goparse::parse_bool(text).ok_or_else(|| NumError::Syntax.flag_text().to_string())
    }
    fn from_yaml(node: &Yaml, _: Option<&bool>) -> Result<bool, String> {
        node.as_bool().ok_or_else(|| expected("a boolean", node))
    }
    fn show(value: &bool) -> String {
        value.to_string()
    }
}

/// Go's `uint` (64 bits on the platforms we build for).
pub struct Uint;
impl Kind for Uint {
    type Value = u64;
    fn parse(text: &str, _: Option<&u64>) -> Result<u64, String> {
        goparse::parse_uint(text, 64).map_err(|e| e.flag_text().to_string())
    }
    fn from_yaml(node: &Yaml, _: Option<&u64>) -> Result<u64, String> {
        node.as_u64()
            .ok_or_else(|| expected("an unsigned integer", node))
    }
    fn show(value: &u64) -> String {
        value.to_string()
    }
}

/// etcd's own `uint32` flag value, whose errors are `strconv`'s raw text.
pub struct Uint32;
impl Kind for Uint32 {
    type Value = u32;
    fn parse(text: &str, _: Option<&u32>) -> Result<u32, String> {
        goparse::parse_uint(text, 32)
            .map(|v| v as u32)
            .map_err(|e| e.strconv_text(text))
    }
    fn from_yaml(node: &Yaml, _: Option<&u32>) -> Result<u32, String> {
        node.as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| expected("an unsigned 32-bit integer", node))
    }
    fn show(value: &u32) -> String {
        value.to_string()
    }
}

/// Go's `int` and `int64`.
pub struct Int;
impl Kind for Int {
    type Value = i64;
    fn parse(text: &str, _: Option<&i64>) -> Result<i64, String> {
        goparse::parse_int(text).map_err(|e| e.flag_text().to_string())
    }
    fn from_yaml(node: &Yaml, _: Option<&i64>) -> Result<i64, String> {
        node.as_i64().ok_or_else(|| expected("an integer", node))
    }
    fn show(value: &i64) -> String {
        value.to_string()
    }
}

/// `time.Duration`, held as nanoseconds (it may be negative, as in Go). Flags take Go's
/// duration text ("5s", "2h"); YAML takes integer nanoseconds, as etcd's decoder does.
pub struct Dur;
impl Kind for Dur {
    type Value = i64;
    fn parse(text: &str, _: Option<&i64>) -> Result<i64, String> {
        goparse::parse_duration(text).ok_or_else(|| NumError::Syntax.flag_text().to_string())
    }
    fn from_yaml(node: &Yaml, _: Option<&i64>) -> Result<i64, String> {
        node.as_i64()
            .ok_or_else(|| expected("a duration in nanoseconds", node))
    }
    fn show(value: &i64) -> String {
        goparse::format_duration(*value)
    }
}

/// A comma-separated URL list (`flags.UniqueURLs`): sorted, without duplicates. An empty text
/// leaves the list as it was, which is etcd's behaviour for `--listen-client-urls=""`.
pub struct Urls;
impl Urls {
    fn parse_list(text: &str) -> Result<Vec<String>, String> {
        let mut urls = text
            .split(',')
            .map(goparse::check_member_url)
            .collect::<Result<Vec<_>, _>>()?;
        urls.sort();
        urls.dedup();
        Ok(urls)
    }
}
impl Kind for Urls {
    type Value = Vec<String>;
    fn parse(text: &str, current: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        match current {
            _ if !text.is_empty() => Self::parse_list(text),
            Some(current) => Ok(current.clone()),
            None => Ok(Vec::new()),
        }
    }
    fn from_yaml(node: &Yaml, current: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        let text = node
            .as_str()
            .ok_or_else(|| expected("a comma-separated URL list", node))?;
        Self::parse(text, current)
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}

/// `--cors`: URLs, or `*` for any origin.
pub struct Cors;
impl Kind for Cors {
    type Value = Vec<String>;
    fn parse(text: &str, current: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        let current = current.cloned().unwrap_or_default();
        if current.len() == 1 && current[0] == text {
            return Ok(current);
        }
        if text == "*" {
            // etcd adds "*" to what is there rather than replacing it.
            let mut with_star = current;
            with_star.push("*".into());
            with_star.sort();
            with_star.dedup();
            return Ok(with_star);
        }
        Urls::parse_list(text)
    }
    fn from_yaml(node: &Yaml, _: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        let text = node
            .as_str()
            .ok_or_else(|| expected("a comma-separated origin list", node))?;
        Self::parse(text, None)
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}

fn string_set(text: &str) -> Vec<String> {
    let mut values: Vec<String> = text.split(',').map(str::to_string).collect();
    values.sort();
    values.dedup();
    values
}

fn yaml_strings(node: &Yaml) -> Result<Vec<String>, String> {
    let items = node
        .as_sequence()
        .ok_or_else(|| expected("a list of strings", node))?;
    items
        .iter()
        .map(|item| Str::from_yaml(item, None))
        .collect()
}

/// A comma-separated set of strings whose YAML form is one string (`--host-whitelist`).
pub struct StrSetCsv;
impl Kind for StrSetCsv {
    type Value = Vec<String>;
    fn parse(text: &str, _: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        Ok(string_set(text))
    }
    fn from_yaml(node: &Yaml, current: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        match node.as_str() {
            Some("") => Ok(current.cloned().unwrap_or_default()),
            Some(text) => Ok(string_set(text)),
            None => Err(expected("a comma-separated list", node)),
        }
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}

/// A comma-separated set of strings whose YAML form is a list (`--log-outputs`).
pub struct StrSetList;
impl Kind for StrSetList {
    type Value = Vec<String>;
    fn parse(text: &str, _: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        Ok(string_set(text))
    }
    fn from_yaml(node: &Yaml, _: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        yaml_strings(node)
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}

/// A comma-separated list kept in the order given (`--cipher-suites`); YAML form is a list.
pub struct StrList;
impl Kind for StrList {
    type Value = Vec<String>;
    fn parse(text: &str, _: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        Ok(if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').map(str::to_string).collect()
        })
    }
    fn from_yaml(node: &Yaml, _: Option<&Vec<String>>) -> Result<Vec<String>, String> {
        yaml_strings(node)
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}

/// One of a fixed set of words (`flags.SelectiveStringValue`); etcd answers "invalid value".
macro_rules! choice_kind {
    ($(#[$doc:meta])* $kind:ident: $($word:literal),+) => {
        $(#[$doc])*
        pub struct $kind;
        impl $kind {
            pub const WORDS: &'static [&'static str] = &[$($word),+];
        }
        impl Kind for $kind {
            type Value = String;
            fn parse(text: &str, _: Option<&String>) -> Result<String, String> {
                if Self::WORDS.contains(&text) {
                    Ok(text.to_string())
                } else {
                    Err("invalid value".into())
                }
            }
            fn from_yaml(node: &Yaml, current: Option<&String>) -> Result<String, String> {
                let text = Str::from_yaml(node, current)?;
                // An empty value in the file keeps the default, as etcd's loader does.
                if text.is_empty() {
                    return Ok(current.cloned().unwrap_or_else(|| Self::WORDS[0].to_string()));
                }
                Self::parse(&text, current).map_err(|_| {
                    format!("invalid value {} (valid values: {})", goparse::go_quote(&text), Self::WORDS.join(", "))
                })
            }
            fn show(value: &String) -> String {
                value.clone()
            }
        }
    };
}

choice_kind!(
    /// `--initial-cluster-state`.
    ClusterState: "new", "existing"
);
choice_kind!(
    /// `--proxy`.
    ProxyMode: "off", "readonly", "on"
);
choice_kind!(
    /// `--discovery-fallback`.
    Fallback: "proxy", "exit"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Yaml {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn each_kind_parses_flag_text() {
        assert_eq!(Str::parse("x", None), Ok("x".to_string()));
        assert_eq!(Bool::parse("T", None), Ok(true));
        assert_eq!(Bool::parse("maybe", None), Err("parse error".into()));
        assert_eq!(Uint::parse("0x10", None), Ok(16));
        assert_eq!(Uint::parse("-1", None), Err("parse error".into()));
        assert_eq!(
            Uint32::parse("abc", None),
            Err("strconv.ParseUint: parsing \"abc\": invalid syntax".into())
        );
        assert_eq!(Int::parse("-2", None), Ok(-2));
        assert_eq!(Dur::parse("2h", None), Ok(7_200_000_000_000));
        assert_eq!(Dur::parse("5", None), Err("parse error".into()));
        assert_eq!(
            Urls::parse("http://b:1,http://a:1,http://a:1", None),
            Ok(vec!["http://a:1".to_string(), "http://b:1".to_string()])
        );
        let before = vec!["http://localhost:2379".to_string()];
        assert_eq!(Urls::parse("", Some(&before)), Ok(before.clone()));
        assert_eq!(
            StrSetCsv::parse("b,a,b", None),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            StrList::parse("b,a", None),
            Ok(vec!["b".to_string(), "a".to_string()])
        );
        assert_eq!(
            ClusterState::parse("existing", None),
            Ok("existing".to_string())
        );
        assert_eq!(ProxyMode::parse("bogus", None), Err("invalid value".into()));
    }

    #[test]
    fn cors_star_adds_to_the_set() {
        let star = Cors::parse("*", None).unwrap();
        assert_eq!(star, vec!["*"]);
        let one = Cors::parse("http://a.example:80", Some(&star)).unwrap();
        assert_eq!(one, vec!["http://a.example:80"]);
        assert_eq!(
            Cors::parse("*", Some(&one)).unwrap(),
            vec!["*", "http://a.example:80"]
        );
        assert!(Cors::parse("foo", None)
            .unwrap_err()
            .starts_with("URL scheme must be"));
    }

    #[test]
    fn yaml_values_follow_etcds_decoder() {
        assert_eq!(Str::from_yaml(&yaml("123"), None), Ok("123".to_string()));
        assert_eq!(Uint::from_yaml(&yaml("100"), None), Ok(100));
        assert!(Uint::from_yaml(&yaml("\"100\""), None).is_err());
        assert!(Uint::from_yaml(&yaml("-1"), None).is_err());
        assert_eq!(Dur::from_yaml(&yaml("5000000"), None), Ok(5_000_000));
        assert!(Dur::from_yaml(&yaml("5s"), None).is_err());
        assert_eq!(Bool::from_yaml(&yaml("true"), None), Ok(true));
        assert_eq!(
            StrSetList::from_yaml(&yaml("[stderr, /tmp/x.log]"), None).unwrap(),
            vec!["stderr", "/tmp/x.log"]
        );
        assert!(StrSetList::from_yaml(&yaml("stderr"), None).is_err());
        assert_eq!(
            Urls::from_yaml(&yaml("http://127.0.0.1:1,http://127.0.0.1:0"), None)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            ClusterState::from_yaml(&yaml("\"\""), Some(&"new".to_string())),
            Ok("new".to_string())
        );
    }
}
