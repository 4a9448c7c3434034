//! `ketch`: start one member the way `etcd` 3.4 starts — same flags, `ETCD_*` variables and
//! `--config-file` YAML, same log lines and exit statuses — so a user can swap the binaries.
//!
//! The flow: [`load`] reads argv and the environment, or the YAML file ([`config_file`]), into
//! [`flags::EtcdConfig`] (etcd's names and defaults, from the one table in [`flags`], with
//! value rules in [`kinds`] and [`goparse`]); [`logging`] sets up capnslog or zap output;
//! [`verify`] makes etcd's checks; [`startup`] logs etcd's start-up lines; [`member_config`]
//! builds the core's `MemberConfig`; [`serve`] starts the member and waits for SIGINT/SIGTERM.

/// mimalloc instead of glibc's malloc: measured on a member with 1M keys of 256 B, and on puts
/// from 100 clients (numbers in the commit that chose it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` (mimalloc.h of the v3 that
/// libmimalloc-sys vendors). The crate names no constant for it; a test checks that this is
/// the option whose default is 1000 ms (v3's options.c).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the operating system at once, as glibc does with large blocks. With
/// mimalloc's default one-second delay, the transient buffers of a large range answer stayed
/// resident while the next one was allocated (tests/it/memory.rs: peak RSS grew by 138 MB
/// answering 64 MB of values, 75 MB with no delay). Puts from 100 clients ran as fast either way.
fn configure_allocator() {
    // SAFETY: mi_option_set only stores the value; any option index is accepted.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Returns memory freed by any thread to the operating system now.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; it only walks mimalloc's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

mod config_file;
mod flags;
mod gateway_cmd;
mod goparse;
mod help;
mod kinds;
mod load;
mod logging;
mod member_config;
mod proxy_config;
mod serve;
mod snapshot_cmd;
mod startup;
mod subcommand_args;
mod verify;
mod version;

use std::path::Path;
use std::process::ExitCode;

use load::{CliError, Outcome};
use logging::LogSettings;
use member_config::DataDirKind;

fn main() -> ExitCode {
    configure_allocator();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    ExitCode::from(run(&args, &env))
}

fn run(args: &[String], env: &[(String, String)]) -> u8 {
    match args.first().map(String::as_str) {
        Some("gateway") => return run_gateway(&args[1..]),
        Some("snapshot") => return run_snapshot(&args[1..]),
        Some("grpc-proxy") => {
            eprintln!(
                "ketch: 'grpc-proxy' (etcd's grpc-proxy command) is not available in ketch; \
                 run the proxy with --proxy on instead"
            );
            return 1;
        }
        _ => {}
    }
    let mut notes = Vec::new();
    let outcome = load::read(args, env, &mut notes);
    logging::print_notes(&notes);
    let (mut config, origin) = match outcome {
        Ok(Outcome::Version) => {
            print!("{}", version::version_text());
            return 0;
        }
        Ok(Outcome::Run { config, origin }) => (config, origin),
        Err(err) => return startup::report(&err),
    };

    let settings = match LogSettings::from_config(&config) {
        Ok(settings) => settings,
        Err(message) => return startup::report(&CliError::verify(message)),
    };
    for line in &settings.warnings {
        eprintln!("{line}");
    }
    if let Err(message) = settings.install() {
        return startup::report(&CliError::verify(message));
    }
    startup::config_source(&origin);
    if let Err(err) = verify::verify(&config) {
        return startup::report(&err);
    }

    let cpus = startup::Cpus::detect();
    startup::versions(cpus);
    if member_config::apply_name_defaults(&mut config) {
        startup::data_dir_defaulted(&config.data_dir);
    }
    let kind = match member_config::identify_data_dir(Path::new(&config.data_dir)) {
        Ok((kind, strangers)) => {
            startup::stray_entries(&config.data_dir, &strangers);
            kind
        }
        Err(message) => {
            startup::fatal("etcdmain", &message);
            return 1;
        }
    };
    if kind == DataDirKind::Member {
        startup::already_initialized(&config.data_dir);
    } else if kind == DataDirKind::Proxy || config.proxy != "off" {
        // A data dir that holds a proxy starts the proxy whatever the flags say (etcd's rule).
        return run_proxy(&config, cpus);
    } else if let Some(refusal) = refusal(&config, kind) {
        startup::fatal("etcdmain", &refusal);
        return 1;
    }
    startup::not_acted_on(&config);
    let member = match member_config::member_config(&config) {
        Ok(member) => member,
        Err(message) => {
            startup::fatal("etcdmain", &message);
            return 1;
        }
    };
    startup::member_summary(&config, cpus, kind == DataDirKind::Member);
    if let Err(e) = member.validate() {
        let message = e.to_string();
        startup::fatal("etcdmain", &message);
        startup::initial_cluster_hints(&config, &message);
        return 1;
    }

    let Some(runtime) = runtime(cpus, "ketch-worker") else {
        return 1;
    };
    runtime.block_on(serve::serve(member, &config))
}

/// `ketch snapshot restore ...`: a data dir from a saved snapshot.
fn run_snapshot(args: &[String]) -> u8 {
    let restore = match snapshot_cmd::parse(args) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("Error: {message}");
            return 1;
        }
    };
    let cfg = ketch_core::config::MemberConfig {
        data_dir: restore.data_dir.clone(),
        wal_dir: restore.wal_dir.clone(),
        ..Default::default()
    };
    match ketch_core::restore::restore_snapshot(&restore.file, &cfg, restore.skip_hash_check) {
        Ok(()) => {
            eprintln!(
                "restored snapshot {} into {}",
                restore.file.display(),
                restore.data_dir.display()
            );
            0
        }
        Err(message) => {
            eprintln!("Error: {message}");
            1
        }
    }
}

/// `ketch gateway start ...`: etcd's L4 gateway.
fn run_gateway(args: &[String]) -> u8 {
    let config = match gateway_cmd::parse(args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
    // etcd's default logging (capnslog to stderr)
    if let Err(message) =
        LogSettings::from_config(&flags::EtcdConfig::default()).and_then(|s| s.install())
    {
        eprintln!("{message}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("ketch-gateway")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(serve::serve_gateway(config))
}

/// `--proxy on|readonly` (or a data dir holding a proxy): forward to the cluster's members.
fn run_proxy(config: &flags::EtcdConfig, cpus: startup::Cpus) -> u8 {
    let proxy = match proxy_config::proxy_config(config) {
        Ok(p) => p,
        Err(message) => {
            startup::fatal("etcdmain", &message);
            return 1;
        }
    };
    let Some(runtime) = runtime(cpus, "ketch-proxy") else {
        return 1;
    };
    runtime.block_on(serve::serve_proxy(proxy))
}

/// The async runtime, one worker per CPU etcd would use; `None` (logged) if it cannot start.
fn runtime(cpus: startup::Cpus, name: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.max_set)
        .thread_name(name)
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            startup::fatal("etcdmain", &format!("cannot start the async runtime: {e}"));
            None
        }
    }
}

/// Why this process cannot start as asked, for what ketch does not do yet. A data dir that
/// already holds a member starts that member whatever the flags say, as etcd does, so this is
/// asked only for an empty data dir without `--proxy`.
fn refusal(config: &flags::EtcdConfig, _kind: DataDirKind) -> Option<String> {
    if !config.discovery.is_empty() || !config.discovery_srv.is_empty() {
        return Some(
            "bootstrapping through --discovery or --discovery-srv is not available in ketch yet; \
             list the members with --initial-cluster instead"
                .into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_names_mimalloc_s_purge_delay() {
        // No test calls configure_allocator: the option still has mimalloc's default.
        // SAFETY: mi_option_get only reads the option table.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            1000
        );
    }

    fn config(args: &[&str]) -> flags::EtcdConfig {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match load::read(&args, &[], &mut Vec::new()).unwrap() {
            Outcome::Run { config, .. } => *config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn discovery_is_refused_on_a_fresh_data_dir() {
        assert!(refusal(
            &config(&["--discovery=https://d.example/x"]),
            DataDirKind::Empty
        )
        .is_some());
        assert_eq!(refusal(&config(&[]), DataDirKind::Empty), None);
    }

    #[test]
    fn usage_errors_exit_2_and_verify_errors_exit_1() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(run(&args(&["--foo"]), &[]), 2);
        assert_eq!(run(&args(&["extra"]), &[]), 1);
        assert_eq!(run(&args(&["gateway"]), &[]), 1);
        assert_eq!(run(&args(&["grpc-proxy", "start"]), &[]), 1);
        assert_eq!(run(&args(&["--version"]), &[]), 0);
    }
}
