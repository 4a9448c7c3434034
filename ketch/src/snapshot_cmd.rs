//! `ketch snapshot restore <file>`: makes a member's data dir from a snapshot saved with
//! `etcdctl snapshot save` (or `ketchctl`) from a Ketch member — what `etcdctl snapshot restore`
//! does for etcd, which cannot read a Ketch backend. Takes etcdctl's restore flags; the member
//! is then started with the same `--name` and `--initial-cluster` flags and forms a new cluster
//! with the snapshot's data.

use std::path::PathBuf;

use crate::member_config::parse_initial_cluster;
use crate::subcommand_args::{Arg, SubcommandArgs};

pub const USAGE: &str = "Usage:\n  ketch snapshot restore <filename> [flags]\n\nFlags:\n      --data-dir string                      Path to the data directory (default \"<name>.etcd\")\n      --initial-advertise-peer-urls string   List of this member's peer URLs to advertise to the rest of the cluster (default \"http://localhost:2380\")\n      --initial-cluster string               Initial cluster configuration for restore bootstrap (default \"default=http://localhost:2380\")\n      --initial-cluster-token string         Initial cluster token for the etcd cluster during restore bootstrap (default \"etcd-cluster\")\n      --name string                          Human-readable name for this member (default \"default\")\n      --skip-hash-check                      Ignore snapshot integrity hash value (required if copied from data directory)\n      --wal-dir string                       Path to the WAL directory (use --data-dir if none given)\n";

#[derive(Debug, PartialEq)]
pub struct Restore {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
    pub skip_hash_check: bool,
}

pub fn parse(args: &[String]) -> Result<Restore, String> {
    match args.first().map(String::as_str) {
        Some("restore") => {}
        _ => {
            return Err(format!(
                "ketch snapshot: the only command is 'restore'\n{USAGE}"
            ))
        }
    }
    let mut file = None;
    let mut name = "default".to_string();
    let mut data_dir = String::new();
    let mut wal_dir = String::new();
    let mut initial_cluster = "default=http://localhost:2380".to_string();
    let mut peer_urls = "http://localhost:2380".to_string();
    let mut skip_hash_check = false;
    let mut args = SubcommandArgs::new(&args[1..]);
    while let Some(arg) = args.next_arg() {
        let (flag, inline) = match arg {
            Arg::Flag(flag, inline) => (flag, inline),
            Arg::Positional(arg) => {
                if file.replace(PathBuf::from(arg)).is_some() {
                    return Err("snapshot restore requires exactly one argument".into());
                }
                continue;
            }
        };
        let mut value = || args.value(flag, inline);
        match flag {
            "name" => name = value()?,
            "data-dir" => data_dir = value()?,
            "wal-dir" => wal_dir = value()?,
            "initial-cluster" => initial_cluster = value()?,
            "initial-cluster-token" => drop(value()?),
            "initial-advertise-peer-urls" => peer_urls = value()?,
            "skip-hash-check" => {
                skip_hash_check = inline.map_or(Ok(true), |v| {
                    v.parse::<bool>()
                        .map_err(|_| format!("invalid --skip-hash-check {v:?}"))
                })?
            }
            _ => return Err(format!("unknown flag: --{flag}\n{USAGE}")),
        }
    }
    let file = file.ok_or("snapshot restore requires exactly one argument")?;
    // etcdctl checks that this member is in the cluster it is restored for
    let cluster = parse_initial_cluster(&initial_cluster)?;
    let mine: Vec<&str> = peer_urls
        .split(',')
        .map(|u| u.trim().trim_end_matches('/'))
        .collect();
    let listed = cluster
        .iter()
        .any(|(n, u)| *n == name && mine.contains(&u.as_str().trim_end_matches('/')));
    if !listed {
        return Err(format!(
            "couldn't find local name {name:?} with peer URLs {mine:?} in the initial cluster configuration {initial_cluster:?}"
        ));
    }
    let data_dir = if data_dir.is_empty() {
        format!("{name}.etcd")
    } else {
        data_dir
    };
    Ok(Restore {
        file,
        data_dir: PathBuf::from(data_dir),
        wal_dir: (!wal_dir.is_empty()).then(|| PathBuf::from(wal_dir)),
        skip_hash_check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn etcdctls_restore_flags() {
        let r = parse(&args(&["restore", "snap.db"])).unwrap();
        assert_eq!(
            (r.file, r.data_dir, r.skip_hash_check),
            (
                PathBuf::from("snap.db"),
                PathBuf::from("default.etcd"),
                false
            )
        );
        let r = parse(&args(&[
            "restore",
            "--name=m2",
            "snap.db",
            "--initial-cluster",
            "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380",
            "--initial-advertise-peer-urls=http://10.0.0.2:2380",
            "--skip-hash-check",
        ]))
        .unwrap();
        assert_eq!(
            (r.data_dir, r.skip_hash_check),
            (PathBuf::from("m2.etcd"), true)
        );
    }

    #[test]
    fn a_member_missing_from_the_cluster_is_refused() {
        let err = parse(&args(&[
            "restore",
            "s.db",
            "--name=m3",
            "--initial-cluster=m1=http://10.0.0.1:2380",
        ]))
        .unwrap_err();
        assert!(err.contains("couldn't find local name"), "{err}");
        assert!(parse(&args(&["restore"])).is_err());
        assert!(parse(&args(&["save", "x"])).is_err());
    }
}
