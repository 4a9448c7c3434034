//! `ketch gateway start`: etcd's L4 gateway command and its flags (`--listen-addr`,
//! `--endpoints`, `--retry-delay`), as pflag reads them (`--flag=value` or `--flag value`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ketch_proxy::l4::GatewayConfig;

use crate::goparse::parse_duration;
use crate::subcommand_args::{Arg, SubcommandArgs};

pub const USAGE: &str = "Usage:\n  ketch gateway start [flags]\n\nFlags:\n      --endpoints strings       comma separated etcd cluster endpoints (default [127.0.0.1:2379])\n      --listen-addr string      listen address (default \"127.0.0.1:23790\")\n      --retry-delay duration    duration of delay before retrying failed endpoints (default 1m0s)\n";

/// The gateway's configuration from the arguments after `gateway`.
pub fn parse(args: &[String]) -> Result<GatewayConfig, String> {
    match args.first().map(String::as_str) {
        Some("start") => {}
        _ => {
            return Err(format!(
                "ketch gateway: the only command is 'start'\n{USAGE}"
            ))
        }
    }
    let mut listen = "127.0.0.1:23790".to_string();
    let mut endpoints = "127.0.0.1:2379".to_string();
    let mut retry = "1m".to_string();
    let mut args = SubcommandArgs::new(&args[1..]);
    while let Some(arg) = args.next_arg() {
        let (name, inline) = match arg {
            Arg::Flag(name, inline) => (name, inline),
            Arg::Positional(arg) => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        };
        let mut value = || args.value(name, inline);
        match name {
            "listen-addr" => listen = value()?,
            "endpoints" => endpoints = value()?,
            "retry-delay" => retry = value()?,
            "discovery-srv" | "discovery-srv-name" => {
                return Err(format!(
                "--{name}: DNS SRV discovery is not available in ketch's gateway; list --endpoints"
            ))
            }
            // only used to check SRV-discovered endpoints
            "trusted-ca-file" | "insecure-discovery" => {
                let _ = value();
            }
            _ => return Err(format!("unknown flag: --{name}\n{USAGE}")),
        }
    }
    let listen: SocketAddr = listen
        .to_socket_addrs()
        .map_err(|e| format!("--listen-addr {listen:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--listen-addr {listen:?} resolves to no address"))?;
    let endpoints: Vec<String> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.split_once("://")
                .map_or(e, |(_, rest)| rest)
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    if endpoints.is_empty() {
        return Err("no endpoints found".into());
    }
    let retry_delay = parse_duration(&retry)
        .filter(|n| *n >= 0)
        .map(|n| Duration::from_nanos(n as u64))
        .ok_or_else(|| format!("invalid argument {retry:?} for \"--retry-delay\" flag: time: invalid duration {retry:?}"))?;
    Ok(GatewayConfig {
        listen,
        endpoints,
        retry_delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn etcds_defaults_and_flag_forms() {
        let c = parse(&args(&["start"])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:23790".parse().unwrap());
        assert_eq!(c.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(c.retry_delay, Duration::from_secs(60));
        let c = parse(&args(&[
            "start",
            "--endpoints=http://10.0.0.1:2379,https://10.0.0.2:2379/",
            "--listen-addr",
            "127.0.0.1:4000",
            "--retry-delay=5s",
        ]))
        .unwrap();
        assert_eq!(c.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(c.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(c.retry_delay, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["start", "--bogus=1"]))
            .unwrap_err()
            .contains("unknown flag"));
        assert!(parse(&args(&["start", "--retry-delay=soon"]))
            .unwrap_err()
            .contains("invalid duration"));
        assert!(parse(&args(&["start", "--discovery-srv=example.com"])).is_err());
    }
}
