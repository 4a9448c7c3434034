//! From argv, the environment and an optional YAML file to one [`EtcdConfig`], with etcd 3.4's
//! rules (`etcdmain/config.go`, `pkg/flags`):
//!
//! * The command line is parsed like Go's `flag` package: `-name` and `--name`, `--name=v` or
//!   `--name v`, booleans only as `--flag` or `--flag=v`, parsing stops at the first argument
//!   that is not a flag, and a leftover argument is an error.
//! * `--version` is answered before anything else is read.
//! * `--config-file` (or `ETCD_CONFIG_FILE`) switches to the file alone: the other flags are
//!   still parsed (so an unknown flag is still an error) but their values and every other
//!   `ETCD_*` variable are ignored.
//! * Otherwise each flag not given on the command line takes its `ETCD_*` variable when that
//!   is non-empty. A variable for a flag that *was* given is fatal in etcd 3.4 ("conflicting
//!   environment variable ... is shadowed"), and so it is here; unknown `ETCD_*` variables
//!   are warned about.

use std::collections::BTreeSet;

use crate::config_file::from_yaml;
use crate::flags::{self, EtcdConfig, Flag, FLAGS, IGNORED};
use crate::goparse::go_quote;
use crate::logging::{Note, Severity};

/// The `--initial-cluster` etcd starts from; a config still holding it gets the name rule.
pub const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";

/// Why the binary stops before starting a member, and how etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// A command-line syntax error: the message and the usage go to stderr, exit status 2.
    Usage(String),
    /// `-h` / `--help`: usage to stderr, the flag list to stdout, exit status 0.
    Help,
    /// etcd's "error verifying flags, <message>. See 'etcd --help'.", exit status 1.
    Verify {
        message: String,
        hint: Option<&'static str>,
    },
    /// A critical log line from `pkg` and exit status 1.
    Fatal { pkg: &'static str, message: String },
}

impl CliError {
    pub fn verify(message: impl Into<String>) -> Self {
        CliError::Verify {
            message: message.into(),
            hint: None,
        }
    }
}

/// Where the settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    File(String),
}

#[derive(Debug)]
pub enum Outcome {
    Version,
    Run {
        config: Box<EtcdConfig>,
        origin: Origin,
    },
}

/// The command line applied over etcd's defaults.
#[derive(Debug, Clone)]
pub struct CommandLine {
    pub config: EtcdConfig,
    /// Flags given as arguments, in the order first seen.
    pub given: Vec<&'static str>,
    /// Arguments left after the flags.
    pub rest: Vec<String>,
}

/// Reads everything etcd reads before it starts. Log lines produced on the way (environment
/// variables used or unknown, the config file in use when it fails) are appended to `notes`,
/// because logging is set up only once the settings are known.
pub fn read(
    args: &[String],
    env: &[(String, String)],
    notes: &mut Vec<Note>,
) -> Result<Outcome, CliError> {
    let mut command_line = parse_args(args, notes)?;
    if let Some(extra) = command_line.rest.first() {
        return Err(CliError::verify(format!("'{extra}' is not a valid flag")));
    }
    if command_line.config.version {
        return Ok(Outcome::Version);
    }
    let mut path = command_line.config.config_file.clone();
    if path.is_empty() {
        path = env_value(env, "ETCD_CONFIG_FILE")
            .unwrap_or_default()
            .to_string();
    }
    if !path.is_empty() {
        let mut file_notes = Vec::new();
        let config = match std::fs::read_to_string(&path) {
            Ok(text) => from_yaml(&text, &mut file_notes),
            Err(e) => Err(format!("open {path}: {}", io_reason(&e))),
        };
        // They are printed before the line saying which file is in use; name the file.
        notes.extend(file_notes.into_iter().map(|n| Note {
            text: format!("{path}: {}", n.text),
            ..n
        }));
        return match config {
            Ok(config) => Ok(Outcome::Run {
                config: Box::new(config),
                origin: Origin::File(path),
            }),
            Err(message) => {
                notes.push(Note::new(
                    Severity::Info,
                    "etcdmain",
                    loading_message(&path),
                ));
                Err(CliError::verify(message))
            }
        };
    }
    let set = apply_env(&mut command_line, env, notes)?;
    let config = &mut command_line.config;
    let is_set = |name: &str| set.contains(name);
    // Listening on chosen client URLs means advertising chosen ones too, unless this may end
    // up a proxy; validation then asks for --advertise-client-urls.
    if is_set("listen-client-urls") && !is_set("advertise-client-urls") && !may_be_proxy(config) {
        config.advertise_client_urls.clear();
    }
    // Discovery replaces the default static cluster.
    let discovering = !config.discovery.is_empty()
        || !config.discovery_srv.is_empty()
        || !config.discovery_srv_name.is_empty();
    if discovering && !is_set("initial-cluster") {
        config.initial_cluster.clear();
    }
    Ok(Outcome::Run {
        config: Box::new(command_line.config),
        origin: Origin::CommandLine,
    })
}

/// etcd's line for a config file in use (capnslog wording).
pub fn loading_message(path: &str) -> String {
    format!(
        "Loading server configuration from {}. Other configuration command line flags and environment variables will be ignored if provided.",
        go_quote(path)
    )
}

/// Whether the process could run as a v2 proxy: asked for, or discovery may fall back to it.
pub fn may_be_proxy(config: &EtcdConfig) -> bool {
    config.proxy != "off" || (!config.discovery.is_empty() && config.discovery_fallback == "proxy")
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    // The first occurrence wins, as with Go's os.Getenv.
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

enum Known {
    Flag(&'static Flag),
    Ignored(&'static str),
}

fn find(name: &str) -> Option<Known> {
    if let Some(flag) = flags::lookup(name) {
        return Some(Known::Flag(flag));
    }
    IGNORED
        .iter()
        .find(|n| **n == name)
        .map(|n| Known::Ignored(n))
}

fn ignored_note(name: &str) -> Note {
    Note::new(
        Severity::Warning,
        "pkg/flags",
        format!("flag \"-{name}\" is no longer supported - ignoring."),
    )
}

/// Parses arguments as Go's `flag.FlagSet.Parse` does.
pub fn parse_args(args: &[String], notes: &mut Vec<Note>) -> Result<CommandLine, CliError> {
    let mut config = EtcdConfig::default();
    let mut given: Vec<&'static str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let body = if arg == "--" {
            i += 1;
            break;
        } else if let Some(body) = arg.strip_prefix("--") {
            body
        } else {
            &arg[1..]
        };
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(CliError::Usage(format!("bad flag syntax: {arg}")));
        }
        i += 1;
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let known = match find(name) {
            Some(known) => known,
            None if name == "help" || name == "h" => return Err(CliError::Help),
            None => {
                return Err(CliError::Usage(format!(
                    "flag provided but not defined: -{name}"
                )))
            }
        };
        let flag = match known {
            Known::Ignored(name) => {
                notes.push(ignored_note(name));
                continue;
            }
            Known::Flag(flag) => flag,
        };
        if flag.is_bool {
            let value = inline.unwrap_or("true");
            (flag.set)(&mut config, value).map_err(|e| {
                CliError::Usage(format!(
                    "invalid boolean value {} for -{name}: {e}",
                    go_quote(value)
                ))
            })?;
        } else {
            let value = match inline {
                Some(value) => value,
                None if i < args.len() => {
                    i += 1;
                    args[i - 1].as_str()
                }
                None => return Err(CliError::Usage(format!("flag needs an argument: -{name}"))),
            };
            (flag.set)(&mut config, value).map_err(|e| {
                CliError::Usage(format!(
                    "invalid value {} for flag -{name}: {e}",
                    go_quote(value)
                ))
            })?;
        }
        if !given.contains(&flag.name) {
            given.push(flag.name);
        }
    }
    Ok(CommandLine {
        config,
        given,
        rest: args[i..].to_vec(),
    })
}

/// etcd's `flags.SetFlagsFromEnv`. Returns the names of all flags set, by argument or
/// variable.
pub fn apply_env(
    command_line: &mut CommandLine,
    env: &[(String, String)],
    notes: &mut Vec<Note>,
) -> Result<BTreeSet<&'static str>, CliError> {
    let shadowing: BTreeSet<String> = command_line
        .given
        .iter()
        .map(|n| flags::env_name(n))
        .collect();
    let mut set: BTreeSet<&'static str> = command_line.given.iter().copied().collect();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut error = None;

    // Go visits flags in name order.
    let mut names: Vec<&'static str> = FLAGS
        .iter()
        .map(|f| f.name)
        .chain(IGNORED.iter().copied())
        .collect();
    names.sort_unstable();
    for name in names {
        let key = flags::env_name(name);
        if shadowing.contains(&key) {
            continue;
        }
        let Some(value) = env_value(env, &key).filter(|v| !v.is_empty()) else {
            continue;
        };
        used.insert(key.clone());
        match find(name) {
            Some(Known::Flag(flag)) => {
                if let Err(e) = (flag.set)(&mut command_line.config, value) {
                    error = Some(format!("invalid value {} for {key}: {e}", go_quote(value)));
                    continue;
                }
                set.insert(flag.name);
            }
            Some(Known::Ignored(name)) => notes.push(ignored_note(name)),
            None => unreachable!("names come from the tables"),
        }
        notes.push(Note::new(
            Severity::Info,
            "pkg/flags",
            format!("recognized and used environment variable {key}={value}"),
        ));
    }

    for (key, value) in env {
        if used.contains(key) {
            continue;
        }
        if shadowing.contains(key) {
            return Err(CliError::Fatal {
                pkg: "pkg/flags",
                message: format!(
                    "conflicting environment variable {} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                    go_quote(key)
                ),
            });
        }
        if key.starts_with("ETCD_") {
            notes.push(Note::new(
                Severity::Warning,
                "pkg/flags",
                format!("unrecognized environment variable {key}={value}"),
            ));
        }
    }
    match error {
        Some(message) => Err(CliError::verify(message)),
        None => Ok(set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(a: &[&str], e: &[(&str, &str)]) -> (Result<Outcome, CliError>, Vec<Note>) {
        let mut notes = Vec::new();
        let outcome = read(&args(a), &env(e), &mut notes);
        (outcome, notes)
    }

    fn config(a: &[&str], e: &[(&str, &str)]) -> EtcdConfig {
        match run(a, e).0 {
            Ok(Outcome::Run { config, .. }) => *config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn error(a: &[&str], e: &[(&str, &str)]) -> CliError {
        match run(a, e).0 {
            Err(e) => e,
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_give_etcds_defaults() {
        assert_eq!(config(&[], &[]), EtcdConfig::default());
    }

    #[test]
    fn flags_take_go_syntax() {
        let c = config(
            &[
                "-name=a",
                "--data-dir",
                "/tmp/a",
                "--enable-v2",
                "--pre-vote=false",
                "--strict-reconfig-check=0",
                "--snapshot-count=0x10",
                "--grpc-keepalive-timeout=1m30s",
                "--quota-backend-bytes=-1",
                "--listen-client-urls=http://127.0.0.1:2479,http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--log-outputs=stderr,/tmp/k.log",
                "--cipher-suites=TLS_B,TLS_A",
                "--initial-cluster-state=existing",
            ],
            &[],
        );
        assert_eq!((c.name.as_str(), c.data_dir.as_str()), ("a", "/tmp/a"));
        assert!(c.enable_v2 && !c.pre_vote && !c.strict_reconfig_check);
        assert_eq!(c.snapshot_count, 16);
        assert_eq!(c.grpc_keepalive_timeout, 90_000_000_000);
        assert_eq!(c.quota_backend_bytes, -1);
        assert_eq!(
            c.listen_client_urls,
            vec!["http://127.0.0.1:2379", "http://127.0.0.1:2479"]
        );
        assert_eq!(c.log_outputs, vec!["/tmp/k.log", "stderr"]);
        assert_eq!(c.cipher_suites, vec!["TLS_B", "TLS_A"]);
        assert_eq!(c.initial_cluster_state, "existing");
    }

    #[test]
    fn flag_errors_read_like_gos_flag_package() {
        let usage = |a: &[&str]| match error(a, &[]) {
            CliError::Usage(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(usage(&["--foo"]), "flag provided but not defined: -foo");
        assert_eq!(
            usage(&["--heartbeat-interval=abc"]),
            "invalid value \"abc\" for flag -heartbeat-interval: parse error"
        );
        assert_eq!(
            usage(&["-enable-v2=maybe"]),
            "invalid boolean value \"maybe\" for -enable-v2: parse error"
        );
        assert_eq!(
            usage(&["--proxy=bogus"]),
            "invalid value \"bogus\" for flag -proxy: invalid value"
        );
        assert_eq!(
            usage(&["--max-snapshots=-1"]),
            "invalid value \"-1\" for flag -max-snapshots: parse error"
        );
        assert_eq!(
            usage(&["--grpc-keepalive-min-time=5"]),
            "invalid value \"5\" for flag -grpc-keepalive-min-time: parse error"
        );
        assert_eq!(
            usage(&["--listen-client-urls=foo"]),
            "invalid value \"foo\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: foo"
        );
        assert_eq!(usage(&["--name"]), "flag needs an argument: -name");
        assert_eq!(usage(&["---name"]), "bad flag syntax: ---name");
        assert_eq!(error(&["--help"], &[]), CliError::Help);
        assert_eq!(error(&["-h"], &[]), CliError::Help);
        // A bool flag does not take the next argument, which is then left over.
        assert_eq!(
            error(&["--enable-v2", "false"], &[]),
            CliError::verify("'false' is not a valid flag")
        );
        assert_eq!(
            error(&["extra"], &[]),
            CliError::verify("'extra' is not a valid flag")
        );
    }

    #[test]
    fn double_dash_ends_the_flags() {
        assert_eq!(config(&["--name=x", "--"], &[]).name, "x");
        assert_eq!(
            error(&["--", "--name=x"], &[]),
            CliError::verify("'--name=x' is not a valid flag")
        );
    }

    #[test]
    fn old_flags_are_ignored_with_a_warning() {
        let (outcome, notes) = run(&["-v", "--snapshot=true", "--name=x"], &[]);
        assert!(matches!(outcome, Ok(Outcome::Run { .. })));
        assert_eq!(notes.len(), 2);
        assert_eq!(
            notes[0].text,
            "flag \"-v\" is no longer supported - ignoring."
        );
    }

    #[test]
    fn version_is_answered_first() {
        assert!(matches!(
            run(&["--version", "--name=x"], &[("ETCD_BOGUS", "1")]).0,
            Ok(Outcome::Version)
        ));
    }

    #[test]
    fn env_vars_map_to_flags_and_are_logged() {
        let (outcome, notes) = run(
            &[],
            &[
                ("ETCD_NAME", "envname"),
                ("ETCD_HEARTBEAT_INTERVAL", "200"),
                ("ETCD_ELECTION_TIMEOUT", "2000"),
                ("ETCD_ENABLE_V2", "true"),
                ("ETCD_INITIAL_CLUSTER_TOKEN", ""),
                ("ETCD_FOO", "1"),
                ("HOME", "/root"),
            ],
        );
        let Ok(Outcome::Run { config, origin }) = outcome else {
            panic!()
        };
        assert_eq!(origin, Origin::CommandLine);
        assert_eq!(config.name, "envname");
        assert_eq!(
            (config.heartbeat_interval, config.election_timeout),
            (200, 2000)
        );
        assert!(config.enable_v2);
        assert_eq!(config.initial_cluster_token, "etcd-cluster");
        let texts: Vec<&str> = notes.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "recognized and used environment variable ETCD_ELECTION_TIMEOUT=2000",
                "recognized and used environment variable ETCD_ENABLE_V2=true",
                "recognized and used environment variable ETCD_HEARTBEAT_INTERVAL=200",
                "recognized and used environment variable ETCD_NAME=envname",
                "unrecognized environment variable ETCD_INITIAL_CLUSTER_TOKEN=",
                "unrecognized environment variable ETCD_FOO=1",
            ]
        );
        assert_eq!(notes[5].severity, Severity::Warning);
    }

    #[test]
    fn every_flag_has_its_env_var() {
        let defaults = EtcdConfig::default();
        for flag in FLAGS {
            let value = (flag.show)(&defaults);
            if value.is_empty() || flag.name == "config-file" {
                continue;
            }
            let key = flags::env_name(flag.name);
            let (outcome, notes) = run(&[], &[(key.as_str(), value.as_str())]);
            assert!(
                matches!(outcome, Ok(Outcome::Run { .. })),
                "{key}: {outcome:?}"
            );
            assert_eq!(
                notes.last().map(|n| n.text.clone()),
                Some(format!(
                    "recognized and used environment variable {key}={value}"
                ))
            );
        }
    }

    #[test]
    fn a_flag_wins_over_its_env_var_and_etcd_refuses_the_pair() {
        // The flag's value is what the command line says ...
        let mut notes = Vec::new();
        let mut command_line = parse_args(&args(&["--name=flag"]), &mut notes).unwrap();
        let result = apply_env(
            &mut command_line,
            &env(&[("ETCD_DATA_DIR", "/d"), ("ETCD_NAME", "env")]),
            &mut notes,
        );
        assert_eq!(command_line.config.name, "flag");
        assert_eq!(command_line.config.data_dir, "/d");
        // ... and, as in etcd 3.4, the shadowed variable stops the start.
        assert_eq!(
            result.unwrap_err(),
            CliError::Fatal {
                pkg: "pkg/flags",
                message: "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)".into()
            }
        );
    }

    #[test]
    fn env_values_are_checked_like_flags() {
        assert_eq!(
            error(&[], &[("ETCD_HEARTBEAT_INTERVAL", "abc")]),
            CliError::verify("invalid value \"abc\" for ETCD_HEARTBEAT_INTERVAL: parse error")
        );
        assert_eq!(
            error(&[], &[("ETCD_LISTEN_PEER_URLS", "http://x")]),
            CliError::verify(
                "invalid value \"http://x\" for ETCD_LISTEN_PEER_URLS: URL address does not have the form \"host:port\": http://x"
            )
        );
    }

    #[test]
    fn listen_client_urls_without_advertise_clears_the_default() {
        let c = config(&["--listen-client-urls=http://127.0.0.1:2379"], &[]);
        assert!(c.advertise_client_urls.is_empty());
        let c = config(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:2379")]);
        assert!(c.advertise_client_urls.is_empty());
        let c = config(
            &["--listen-client-urls=http://127.0.0.1:2379", "--proxy=on"],
            &[],
        );
        assert_eq!(c.advertise_client_urls, vec!["http://localhost:2379"]);
    }

    #[test]
    fn discovery_clears_the_default_initial_cluster() {
        assert_eq!(
            config(&["--discovery=https://d.example/x"], &[]).initial_cluster,
            ""
        );
        let c = config(
            &[
                "--discovery=https://d.example/x",
                "--initial-cluster=a=http://1.2.3.4:2380",
            ],
            &[],
        );
        assert_eq!(c.initial_cluster, "a=http://1.2.3.4:2380");
    }

    #[test]
    fn config_file_ignores_other_flags_and_env() {
        let dir = std::env::temp_dir().join(format!("ketch-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yml");
        std::fs::write(&path, "name: fromfile\n").unwrap();
        let path = path.to_str().unwrap().to_string();

        let (outcome, notes) = run(
            &["--config-file", &path, "--name=flag"],
            &[("ETCD_NAME", "env"), ("ETCD_BOGUS", "1")],
        );
        let Ok(Outcome::Run { config, origin }) = outcome else {
            panic!()
        };
        assert_eq!(config.name, "fromfile");
        assert_eq!(origin, Origin::File(path.clone()));
        assert!(notes.is_empty(), "{notes:?}");

        let (outcome, _) = run(&["--name=flag"], &[("ETCD_CONFIG_FILE", &path)]);
        let Ok(Outcome::Run { config, .. }) = outcome else {
            panic!()
        };
        assert_eq!(config.name, "fromfile");

        // Unknown flags are still errors with a config file.
        assert!(matches!(
            error(&["--config-file", &path, "--bogus"], &[]),
            CliError::Usage(_)
        ));
        let (outcome, notes) = run(&["--config-file=/nonexistent/k.yml"], &[]);
        assert_eq!(
            outcome.unwrap_err(),
            CliError::verify("open /nonexistent/k.yml: no such file or directory")
        );
        assert_eq!(notes[0].text, loading_message("/nonexistent/k.yml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
