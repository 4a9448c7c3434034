//! Several member processes forming one cluster on free loopback ports.

use std::time::{Duration, Instant};

use crate::bins::Kind;
use crate::server::{two_free_ports, Server};

/// A cluster of `Server`s named `m1`, `m2`, … Members can be killed and restarted one by one;
/// all are killed when the cluster is dropped.
pub struct Cluster {
    pub members: Vec<Server>,
    /// With [`Cluster::start_relayed`], the relay in front of each member's peer port.
    pub relays: Vec<crate::relay::Relay>,
}

impl Cluster {
    /// Starts `n` members of `kind` as a new cluster and waits until each reports healthy.
    pub fn start(kind: Kind, n: usize) -> Cluster {
        Cluster::start_with(kind, n, &[])
    }

    /// [`Cluster::start`] with extra flags for every member.
    pub fn start_with(kind: Kind, n: usize, args: &[&str]) -> Cluster {
        Cluster::start_with_env(kind, n, args, &[])
    }

    /// [`Cluster::start_with`] and environment variables for every member.
    pub fn start_with_env(kind: Kind, n: usize, args: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::start_custom(kind, n, false, |mut b| {
            for a in args {
                b = b.arg(*a);
            }
            for (k, v) in env {
                b = b.env(k, v);
            }
            b
        })
    }

    /// Starts `n` members as a new cluster, each builder passed through `configure` (flags,
    /// TLS); with `peer_https` the members' peer URLs are `https://`.
    pub fn start_custom(
        kind: Kind,
        n: usize,
        peer_https: bool,
        configure: impl Fn(crate::ServerBuilder) -> crate::ServerBuilder,
    ) -> Cluster {
        let scheme = if peer_https { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| two_free_ports()).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{}={scheme}://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let builders = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let b = Server::builder(kind)
                    .name(&format!("m{}", i + 1))
                    .cluster_member(*p, &initial);
                configure(if peer_https { b.peer_https() } else { b })
            })
            .collect();
        Cluster {
            members: Server::start_all(builders),
            relays: Vec::new(),
        }
    }

    /// Starts `n` members whose peer traffic reaches them through relays, so that a test can
    /// cut a member off (`relays[i].cut()`: nothing reaches member i) and heal it again.
    pub fn start_relayed(kind: Kind, n: usize) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| two_free_ports()).collect();
        let relays: Vec<crate::relay::Relay> = ports
            .iter()
            .map(|(_, peer)| crate::relay::Relay::start(([127, 0, 0, 1], *peer).into()))
            .collect();
        let initial = relays
            .iter()
            .enumerate()
            .map(|(i, r)| format!("m{}=http://127.0.0.1:{}", i + 1, r.port()))
            .collect::<Vec<_>>()
            .join(",");
        let builders = ports
            .iter()
            .zip(&relays)
            .enumerate()
            .map(|(i, (p, r))| {
                Server::builder(kind)
                    .name(&format!("m{}", i + 1))
                    .cluster_member(*p, &initial)
                    .advertise_peer_port(r.port())
            })
            .collect();
        Cluster {
            members: Server::start_all(builders),
            relays,
        }
    }

    /// The `--initial-cluster` value of the members started so far.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name(), m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--endpoints` value naming every member whose process runs.
    pub fn endpoints(&mut self) -> String {
        self.members
            .iter_mut()
            .filter_map(|m| m.is_running().then(|| m.endpoint()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (leader member id, raft term) as member `i` reports them, if it answers.
    pub fn status_of(&self, i: usize) -> Option<(u64, u64, u64)> {
        let out = self.members[i]
            .etcdctl()
            .timeout(Duration::from_secs(3))
            .run(&["endpoint", "status", "-w", "json", "--command-timeout=1s"]);
        if !out.success() {
            return None;
        }
        let v = out.json();
        let st = &v[0]["Status"];
        Some((
            st["leader"].as_u64()?,
            st["header"]["raft_term"].as_u64()?,
            st["header"]["member_id"].as_u64()?,
        ))
    }

    /// Waits until the running members agree on a leader among them; returns its position
    /// and the term. Panics after `timeout`.
    pub fn wait_leader(&mut self, timeout: Duration) -> (usize, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].is_running())
                .collect();
            let seen: Vec<(u64, u64, u64)> =
                running.iter().filter_map(|&i| self.status_of(i)).collect();
            if seen.len() == running.len() && !seen.is_empty() {
                let (leader, term, _) = seen[0];
                if leader != 0 && seen.iter().all(|s| s.0 == leader && s.1 == term) {
                    if let Some(pos) = running
                        .iter()
                        .zip(&seen)
                        .find(|(_, s)| s.2 == leader)
                        .map(|(i, _)| *i)
                    {
                        return (pos, term);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
