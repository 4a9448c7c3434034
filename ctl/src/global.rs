//! The global flags in one place: `ETCDCTL_*` environment variables, `--debug`'s flag dump,
//! the output format, TLS and credential settings, and creating the client. Each step fails
//! with the exit code and message etcdctl uses, and the steps run in etcdctl's order, so that
//! of two problems the same one is reported.

use std::io::{Read, Write};
use std::time::Duration;

use crate::cli::flags::FlagSet;
use crate::client::connect::Keepalive;
use crate::client::tls::SecureSettings;
use crate::client::{Client, ClientSettings, SetupError};
use crate::error::{CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::logline;
use crate::printer::{new_printer, Printer};

const ENV_PREFIX: &str = "ETCDCTL";

/// etcd's `FlagToEnv`: `dial-timeout` → `ETCDCTL_DIAL_TIMEOUT`.
pub fn flag_to_env(name: &str) -> String {
    format!("{ENV_PREFIX}_{}", name.replace('-', "_").to_uppercase())
}

/// etcd's `SetPflagsFromEnv` over the flags a command inherits: each flag not given on the
/// command line takes its `ETCDCTL_*` variable (invalid values are ignored, as etcdctl
/// ignores the error). Unknown `ETCDCTL_*` variables are warned about; a variable shadowed by
/// a flag given on the command line is fatal.
pub fn apply_env(flags: &mut FlagSet) -> CtlResult {
    let names: Vec<&'static str> = flags
        .iter()
        .filter(|f| !f.local)
        .map(|f| f.spec.name)
        .collect();
    let mut already_set = Vec::new();
    let mut used = Vec::new();
    for name in names {
        let key = flag_to_env(name);
        if flags.changed(name) {
            already_set.push(key);
            continue;
        }
        let value = std::env::var_os(&key)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !value.is_empty() {
            used.push(key);
            let _ = flags.set(name, &value);
        }
    }
    for (key, value) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        // etcdctl's main consumes ETCDCTL_API before flags are looked at.
        if key == "ETCDCTL_API" || used.contains(&key) {
            continue;
        }
        if already_set.contains(&key) {
            logline::emit(&logline::capnslog(
                'C',
                &format!(
                    "conflicting environment variable {} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                    crate::gofmt::quote(key.as_bytes())
                ),
            ));
            return Err(CtlError::silent(EXIT_ERROR));
        }
        if key.starts_with(&format!("{ENV_PREFIX}_")) {
            logline::emit(&logline::capnslog(
                'W',
                &format!(
                    "unrecognized environment variable {key}={}",
                    value.to_string_lossy()
                ),
            ));
        }
    }
    Ok(())
}

/// `--debug`: every inherited flag as `ETCDCTL_NAME=value` on stderr. (etcdctl then also
/// turns on grpc-go's own logging, which ketchctl has no equivalent for.)
fn debug_dump(flags: &FlagSet) {
    if !flags.bool("debug") {
        return;
    }
    let mut text = String::new();
    for f in flags.iter().filter(|f| !f.local) {
        // `watch`'s stand-ins for ETCDCTL_WATCH_KEY/RANGE_END discard what they are set to.
        let value = match f.spec.name {
            "watch-key" | "watch-range-end" => String::new(),
            _ => f.value_string(),
        };
        text.push_str(&format!("{}={value}\n", flag_to_env(f.spec.name)));
    }
    logline::emit(&text);
}

/// `-w` and `--hex` as a printer.
pub fn display(flags: &FlagSet) -> CtlResult<Box<dyn Printer>> {
    new_printer(&flags.string("write-out"), flags.bool("hex"))
        .ok_or_else(|| CtlError::bad_feature("unsupported output format"))
}

fn duration(flags: &FlagSet, name: &str) -> Duration {
    Duration::from_nanos(flags.duration(name).max(0) as u64)
}

/// `--command-timeout`, read at the moment etcdctl reads it (some commands read it before the
/// environment is applied, some after).
pub fn command_timeout(flags: &FlagSet) -> Duration {
    duration(flags, "command-timeout")
}

pub fn dial_timeout(flags: &FlagSet) -> Duration {
    duration(flags, "dial-timeout")
}

pub fn keepalive(flags: &FlagSet) -> Keepalive {
    Keepalive {
        time: duration(flags, "keepalive-time"),
        timeout: duration(flags, "keepalive-timeout"),
    }
}

/// etcdctl's `endpointsFromCmd`: SRV discovery when `--discovery-srv` is set, else
/// `--endpoints` with spaces trimmed.
pub fn endpoints(flags: &FlagSet) -> CtlResult<Vec<String>> {
    let domain = flags.string("discovery-srv");
    if !domain.is_empty() {
        return Err(CtlError::error(format!(
            "ketchctl does not support DNS SRV discovery yet (--discovery-srv={domain}); pass --endpoints instead"
        )));
    }
    Ok(flags
        .strings("endpoints")
        .into_iter()
        .map(|e| e.trim().to_string())
        .collect())
}

/// etcdctl's `secureCfgFromCmd`.
pub fn secure_settings(flags: &FlagSet) -> CtlResult<SecureSettings> {
    let mut files = Vec::new();
    for name in ["cert", "key", "cacert"] {
        let value = flags.string(name);
        if value.is_empty() && flags.changed(name) {
            return Err(CtlError::bad_args(format!(
                "empty string is passed to --{name} option"
            )));
        }
        files.push(value);
    }
    let server_name = if flags.bool("insecure-discovery") {
        String::new()
    } else {
        flags.string("discovery-srv")
    };
    Ok(SecureSettings {
        cert: files[0].clone(),
        key: files[1].clone(),
        cacert: files[2].clone(),
        server_name,
        insecure_transport: flags.bool("insecure-transport"),
        insecure_skip_verify: flags.bool("insecure-skip-tls-verify"),
    })
}

/// etcdctl's `authCfgFromCmd`: `--user name:password`, `--user name --password p`, or a
/// prompt for the password.
pub fn credentials(flags: &FlagSet) -> CtlResult<Option<(String, String)>> {
    let user = flags.string("user");
    let password = flags.string("password");
    if user.is_empty() {
        return Ok(None);
    }
    if !password.is_empty() {
        return Ok(Some((user, password)));
    }
    match user.split_once(':') {
        Some((name, pass)) => Ok(Some((name.to_string(), pass.to_string()))),
        None => Ok(Some((user, ask_password()?))),
    }
}

/// speakeasy's prompt: `Password: ` on stdout, terminal echo off through `stty`, one line from
/// stdin, then a newline on stdout.
fn ask_password() -> CtlResult<String> {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(b"Password: ");
    let _ = stdout.flush();
    let stty = |arg: &str| {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("/bin/stty")
            .arg0("stty")
            .arg(arg)
            .status()
            .map_err(|e| {
                CtlError::error(format!(
                    "failed turning off console echo for password entry:\n\t{e}"
                ))
            })
    };
    stty("-echo")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let read = loop {
        match stdin.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) => line.push(byte[0]),
            Err(e) => break Err(e),
        }
    };
    let _ = stty("echo");
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
    read.map_err(|e| CtlError::error(format!("failed during password entry: {e}")))?;
    Ok(String::from_utf8_lossy(crate::gofmt::trim_space(&line)).into_owned())
}

/// etcdctl's `clientConfigFromCmd`: environment, debug dump, endpoints, timeouts, TLS and
/// credential settings, then the printer.
pub fn client_config(flags: &mut FlagSet) -> CtlResult<(ClientSettings, Box<dyn Printer>)> {
    apply_env(flags)?;
    debug_dump(flags);
    let endpoints = endpoints(flags)?;
    let settings = ClientSettings {
        endpoints,
        dial_timeout: dial_timeout(flags),
        keepalive: keepalive(flags),
        secure: secure_settings(flags)?,
        credentials: credentials(flags)?,
    };
    let printer = display(flags)?;
    Ok((settings, printer))
}

/// clientv3.New with etcdctl's exit codes: bad TLS files are bad arguments, failing to
/// authenticate is a bad connection.
pub async fn connect(settings: ClientSettings) -> CtlResult<Client> {
    Client::new(settings).await.map_err(|e| match e {
        SetupError::Config(m) => CtlError::new(EXIT_BAD_ARGS, m),
        e @ (SetupError::Connect(_) | SetupError::NoEndpoints) => {
            CtlError::new(EXIT_BAD_CONNECTION, e.to_string())
        }
    })
}

/// `mustClientFromCmd`: settings, printer and a connected client.
pub async fn must_client(flags: &mut FlagSet) -> CtlResult<(Client, Box<dyn Printer>)> {
    let (settings, printer) = client_config(flags)?;
    Ok((connect(settings).await?, printer))
}
