//! The lines etcd 3.4 logs while it starts, which operators and scripts look for, in both
//! logging styles: versions and CPUs from `etcdmain`, the member summary from `embed`, and
//! ketch's own warnings for settings it accepts but does not act on yet.

use tracing::{error, info, warn};

use crate::flags::{EtcdConfig, Use, FLAGS};
use crate::load::{CliError, Origin};
use crate::logging::{self, Note, Severity, Style};
use crate::member_config::initial_cluster_from_name;
use crate::version;

fn zap() -> bool {
    logging::style() == Style::Zap
}

/// Logs a critical line from `pkg`: through tracing once logging is set up, directly before.
pub fn fatal(pkg: &'static str, message: &str) {
    if logging::installed() {
        error!(target: "etcdmain", pkg, severity = "critical", "{message}");
    } else {
        logging::print_notes(&[Note::new(Severity::Critical, pkg, message)]);
    }
}

/// Reports why the process stops before starting a member, as etcd does; returns the exit
/// status.
pub fn report(err: &CliError) -> u8 {
    match err {
        CliError::Usage(message) => {
            eprintln!("{message}");
            eprint!("{}", crate::help::usage());
            2
        }
        CliError::Help => {
            eprint!("{}", crate::help::usage());
            print!("{}", crate::help::flag_list());
            0
        }
        CliError::Verify { message, hint } => {
            if !logging::installed() {
                let mut notes = vec![Note::new(
                    Severity::Error,
                    "etcdmain",
                    format!("error verifying flags, {message}. See 'ketch --help'."),
                )];
                if let Some(hint) = hint {
                    notes.push(Note::new(Severity::Error, "etcdmain", *hint));
                }
                logging::print_notes(&notes);
            } else if zap() {
                warn!(target: "etcdmain", error = %message, "failed to verify flags");
                if hint.is_some() {
                    warn!(target: "etcdmain", error = %message, "advertise client URLs are not set");
                }
            } else {
                error!(target: "etcdmain", "error verifying flags, {message}. See 'ketch --help'.");
                if let Some(hint) = hint {
                    error!(target: "etcdmain", "{hint}");
                }
            }
            1
        }
        CliError::Fatal { pkg, message } => {
            fatal(pkg, message);
            1
        }
    }
}

pub fn config_source(origin: &Origin) {
    if let Origin::File(path) = origin {
        if zap() {
            info!(
                target: "etcdmain",
                path = %path,
                "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"
            );
        } else {
            info!(target: "etcdmain", "{}", crate::load::loading_message(path));
        }
    }
}

/// CPUs the runtime uses and CPUs available, etcd's `GOMAXPROCS` and `NumCPU`. Like Go,
/// `GOMAXPROCS` in the environment sets the first.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    pub max_set: usize,
    pub available: usize,
}

impl Cpus {
    pub fn detect() -> Cpus {
        let available = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let max_set = std::env::var("GOMAXPROCS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(available);
        Cpus { max_set, available }
    }
}

/// etcdmain's version lines (capnslog only; zap carries them in the member summary).
pub fn versions(cpus: Cpus) {
    if zap() {
        return;
    }
    info!(target: "etcdmain", "etcd Version: {}", ketch_api::ETCD_SERVER_VERSION);
    info!(target: "etcdmain", "Git SHA: {}", version::git_sha());
    info!(target: "etcdmain", "Ketch Version: {}", version::KETCH_VERSION);
    if let Some(rust) = version::rust_version() {
        info!(target: "etcdmain", "Rust Version: {rust}");
    }
    info!(target: "etcdmain", "OS/Arch: {}", version::os_arch());
    info!(
        target: "etcdmain",
        "setting maximum number of CPUs to {}, total number of available CPUs is {}",
        cpus.max_set,
        cpus.available
    );
}

pub fn data_dir_defaulted(data_dir: &str) {
    if zap() {
        warn!(target: "etcdmain", { "data-dir" = %data_dir }, "'data-dir' was empty; using default");
    } else {
        warn!(target: "etcdmain", "no data-dir provided, using default data-dir ./{data_dir}");
    }
}

pub fn stray_entries(data_dir: &str, names: &[String]) {
    for name in names {
        if zap() {
            warn!(target: "etcdmain", path = %format!("{data_dir}/{name}"), "found invalid file under data directory");
        } else {
            warn!(
                target: "etcdmain",
                "found invalid file/dir {name} under data dir {data_dir} (Ignore this if you are upgrading etcd)"
            );
        }
    }
}

pub fn already_initialized(data_dir: &str) {
    if zap() {
        info!(
            target: "etcdmain",
            { "data-dir" = %data_dir, "dir-type" = "member" },
            "server has been already initialized"
        );
    } else {
        info!(
            target: "etcdmain",
            severity = "notice",
            "the server is already initialized as member before, starting as etcd member..."
        );
    }
}

/// One warning per setting that differs from etcd's default but that ketch does not act on
/// yet, so that nobody believes e.g. TLS is on when it is not.
pub fn not_acted_on(config: &EtcdConfig) {
    let defaults = EtcdConfig::default();
    for flag in FLAGS.iter().filter(|f| f.used == Use::Later) {
        let value = (flag.show)(config);
        if value == (flag.show)(&defaults) {
            continue;
        }
        if zap() {
            warn!(target: "etcdmain", flag = %format!("--{}", flag.name), value = %value, "setting accepted but not acted on by ketch yet");
        } else {
            warn!(target: "etcdmain", "--{}={value} is accepted but not acted on by ketch yet", flag.name);
        }
    }
}

/// embed's summary of the member about to start.
pub fn member_summary(c: &EtcdConfig, cpus: Cpus, member_initialized: bool) {
    let member_dir = format!("{}/member", c.data_dir);
    let election_ms = (c.election_timeout / c.heartbeat_interval.max(1)) * c.heartbeat_interval;
    let urls = |list: &[String]| list.join(",");
    if zap() {
        let quota = if c.quota_backend_bytes == 0 {
            ketch_core::config::MemberConfig::DEFAULT_QUOTA_BYTES as i64
        } else {
            c.quota_backend_bytes
        };
        info!(
            target: "embed",
            {
            "etcd-version" = ketch_api::ETCD_SERVER_VERSION,
            "git-sha" = version::git_sha(),
            "ketch-version" = version::KETCH_VERSION,
            "rust-version" = version::rust_version().unwrap_or(""),
            "os-arch" = %version::os_arch(),
            "max-cpu-set" = cpus.max_set,
            "max-cpu-available" = cpus.available,
            "member-initialized" = member_initialized,
            "name" = %c.name,
            "data-dir" = %c.data_dir,
            "wal-dir" = %c.wal_dir,
            "member-dir" = %member_dir,
            "force-new-cluster" = c.force_new_cluster,
            "heartbeat-interval" = %crate::goparse::format_duration(c.heartbeat_interval as i64 * 1_000_000),
            "election-timeout" = %crate::goparse::format_duration(election_ms as i64 * 1_000_000),
            "initial-election-tick-advance" = c.initial_election_tick_advance,
            "snapshot-count" = c.snapshot_count,
            "max-wals" = c.max_wals,
            "max-snapshots" = c.max_snapshots,
            "initial-advertise-peer-urls" = %urls(&c.initial_advertise_peer_urls),
            "listen-peer-urls" = %urls(&c.listen_peer_urls),
            "advertise-client-urls" = %urls(&c.advertise_client_urls),
            "listen-client-urls" = %urls(&c.listen_client_urls),
            "initial-cluster" = %c.initial_cluster,
            "initial-cluster-state" = %c.initial_cluster_state,
            "initial-cluster-token" = %c.initial_cluster_token,
            "quota-backend-bytes" = quota,
            "max-request-bytes" = c.max_request_bytes,
            "pre-vote" = c.pre_vote,
            "auto-compaction-mode" = %c.auto_compaction_mode,
            },
            "starting an etcd server"
        );
        return;
    }
    info!(target: "embed", "name = {}", c.name);
    if c.force_new_cluster {
        info!(target: "embed", "force new cluster");
    }
    info!(target: "embed", "data dir = {}", c.data_dir);
    info!(target: "embed", "member dir = {member_dir}");
    if !c.wal_dir.is_empty() {
        info!(target: "embed", "dedicated WAL dir = {}", c.wal_dir);
    }
    info!(target: "embed", "heartbeat = {}ms", c.heartbeat_interval);
    info!(target: "embed", "election = {election_ms}ms");
    info!(target: "embed", "snapshot count = {}", c.snapshot_count);
    if !c.discovery.is_empty() {
        info!(target: "embed", "discovery URL= {}", c.discovery);
        if !c.discovery_proxy.is_empty() {
            info!(target: "embed", "discovery proxy = {}", c.discovery_proxy);
        }
    }
    info!(target: "embed", "advertise client URLs = {}", urls(&c.advertise_client_urls));
    if member_initialized {
        info!(target: "embed", "initial advertise peer URLs = {}", urls(&c.initial_advertise_peer_urls));
        info!(target: "embed", "initial cluster = {}", c.initial_cluster);
    }
}

/// etcd's hints after a start error saying what `--initial-cluster` must include.
pub fn initial_cluster_hints(c: &EtcdConfig, message: &str) {
    if !(message.contains("include") && message.contains("--initial-cluster")) {
        return;
    }
    let default_cluster = c.initial_cluster == initial_cluster_from_name(c);
    if default_cluster {
        info!(target: "etcdmain", "forgot to set --initial-cluster flag?");
    }
    if c.initial_advertise_peer_urls == ["http://localhost:2380"] {
        info!(target: "etcdmain", "forgot to set --initial-advertise-peer-urls flag?");
    }
    if default_cluster && c.discovery.is_empty() {
        info!(target: "etcdmain", "if you want to use discovery service, please set --discovery flag.");
    }
}

pub fn shutting_down(signal: &str) {
    if zap() {
        info!(target: "pkg/osutil", signal, "received signal; shutting down");
    } else {
        info!(target: "pkg/osutil", severity = "notice", "received {signal} signal, shutting down...");
    }
}
