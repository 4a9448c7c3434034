//! The director: which members the proxy forwards to. It learns the members' client URLs from
//! their peer URLs (the `ketchpb.Peer/Members` call), refreshes them every refresh interval,
//! keeps the peer URLs it learnt in `<data-dir>/proxy/cluster` (etcd's file, written to a
//! temporary file, fsynced and renamed), and parks a backend that failed for the failure wait.
//!
//! Backend choice: a consistent-hash ring (`hashring`, with virtual nodes) over the backends'
//! URLs, so that the same key tends to reach the same member (its cache and watches are warm);
//! the ring order after that member is the failover order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hashring::HashRing;
use ketch_api::ketchpb::peer_client::PeerClient;
use ketch_api::ketchpb::MembersRequest;
use ketch_gateway::tls::dial::ChannelDialer;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::config::ProxyConfig;

/// Points each backend has on the ring: enough that three members share keys about evenly.
const VIRTUAL_NODES: u32 = 64;
/// How long one refresh may take (etcd: a 10 s client timeout).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);
/// The refresh interval while no member is known (etcd's director does the same when its
/// interval is the default or longer) or while a member has not published its client URLs.
const EMPTY_RETRY: Duration = Duration::from_secs(1);

/// One member as a backend.
pub struct Backend {
    /// Its client URL.
    pub url: String,
    /// gRPC (HTTP/2) to the member; connects on first use, reconnects after failures.
    pub channel: Channel,
    /// When the backend may be used again after a failure.
    failed_until: Mutex<Option<Instant>>,
}

impl Backend {
    fn new(url: &str, dial_timeout: Duration, dialer: &ChannelDialer) -> Result<Backend, String> {
        let channel = dialer.connect_lazy(url, |endpoint| {
            let endpoint = endpoint.tcp_nodelay(true);
            if dial_timeout.is_zero() {
                endpoint
            } else {
                endpoint.connect_timeout(dial_timeout)
            }
        })?;
        Ok(Backend {
            url: url.to_string(),
            channel,
            failed_until: Mutex::new(None),
        })
    }

    fn available(&self, now: Instant) -> bool {
        let until = self.failed_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_none_or(|t| now >= t)
    }
}

#[derive(Hash, Clone, Debug, PartialEq, Eq)]
struct RingPoint {
    url: String,
    replica: u32,
}

#[derive(Default)]
struct Backends {
    by_url: HashMap<String, Arc<Backend>>,
    ring: HashRing<RingPoint>,
}

/// etcd's cluster file: the peer URLs the proxy learnt.
#[derive(Serialize, Deserialize, Debug, Default)]
struct ClusterFile {
    #[serde(rename = "PeerURLs")]
    peer_urls: Vec<String>,
}

pub struct Director {
    backends: RwLock<Backends>,
    /// dials the members' client URLs (TLS for `https://` ones)
    members: ChannelDialer,
    /// dials peer URLs, to learn the members
    peers: ChannelDialer,
    /// Some member had no client URL yet at the last refresh (it has not published them
    /// through the log): refresh again soon rather than a whole interval later.
    incomplete: std::sync::atomic::AtomicBool,
    /// The peer URLs to refresh from (the latest member list's, else the initial ones).
    peer_urls: Mutex<Vec<String>>,
    config: ProxyConfig,
}

impl Director {
    /// A director that knows the peer URLs of the cluster file in the data dir if there is
    /// one, else the configured ones. Call [`Director::refresh`] to learn the backends.
    pub fn new(config: ProxyConfig) -> Result<Director, String> {
        let file = config.cluster_file();
        let peer_urls = match std::fs::read(&file) {
            Ok(raw) => {
                let parsed: ClusterFile = serde_json::from_slice(&raw).map_err(|e| {
                    format!(
                        "cannot read the proxy's cluster file {}: {e}",
                        file.display()
                    )
                })?;
                if !config.initial_peer_urls.is_empty() {
                    info!(target: "etcdmain", "proxy: using peer urls {:?} from cluster file {}", parsed.peer_urls, file.display());
                }
                parsed.peer_urls
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => config.initial_peer_urls.clone(),
            Err(e) => {
                return Err(format!(
                    "cannot read the proxy's cluster file {}: {e}",
                    file.display()
                ))
            }
        };
        if peer_urls.is_empty() {
            return Err("the proxy knows no member: give --initial-cluster".into());
        }
        // etcd's proxy dials members with the client TLS settings, else the peer ones.
        let member_tls = if config.client_tls.is_empty() {
            &config.peer_tls
        } else {
            &config.client_tls
        };
        let members =
            ChannelDialer::new(Some(member_tls.client_config().map_err(|e| e.to_string())?));
        let peers = ChannelDialer::new(Some(
            config.peer_tls.client_config().map_err(|e| e.to_string())?,
        ));
        Ok(Director {
            backends: RwLock::new(Backends::default()),
            members,
            peers,
            incomplete: std::sync::atomic::AtomicBool::new(false),
            peer_urls: Mutex::new(peer_urls),
            config,
        })
    }

    /// Backends to try for `key`, in order: the one the ring gives, then the next ones; those
    /// parked after a failure are left out.
    pub fn pick(&self, key: &[u8]) -> Vec<Arc<Backend>> {
        let backends = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut order: Vec<Arc<Backend>> = Vec::with_capacity(backends.by_url.len());
        if let Some(points) = backends.ring.get_with_replicas(&key, backends.ring.len()) {
            for p in points {
                if order.iter().any(|b| b.url == p.url) {
                    continue;
                }
                if let Some(b) = backends.by_url.get(&p.url) {
                    if b.available(now) {
                        order.push(b.clone());
                    }
                }
                if order.len() == backends.by_url.len() {
                    break;
                }
            }
        }
        order
    }

    /// Every backend's URL and whether it is available now.
    pub fn endpoints(&self) -> Vec<(String, bool)> {
        let backends = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut all: Vec<(String, bool)> = backends
            .by_url
            .values()
            .map(|b| (b.url.clone(), b.available(now)))
            .collect();
        all.sort();
        all
    }

    /// A call to `backend` failed at the transport: skip it for the failure wait.
    pub fn failed(&self, backend: &Backend) {
        let mut until = backend
            .failed_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        *until = Some(Instant::now() + self.config.failure_wait);
        warn!(target: "proxy", "marked endpoint {} unavailable for {:?}", backend.url, self.config.failure_wait);
    }

    /// Asks the members for the member list and makes their client URLs the backends; keeps
    /// the peer URLs in the cluster file. On failure the backends are dropped (etcd's
    /// behaviour) unless the configuration keeps them.
    pub async fn refresh(&self) -> Result<usize, String> {
        let peers = self
            .peer_urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match tokio::time::timeout(
            REFRESH_TIMEOUT,
            fetch_members(&peers, &self.peers, self.config.dial_timeout),
        )
        .await
        {
            Ok(Ok(Members {
                client_urls,
                peer_urls,
                unpublished,
            })) => {
                self.incomplete
                    .store(unpublished, std::sync::atomic::Ordering::Relaxed);
                self.set_backends(&client_urls);
                if !peer_urls.is_empty() {
                    if let Err(e) = persist(&self.config.cluster_file(), &peer_urls) {
                        warn!(target: "proxy", "could not keep the member list in {}: {e}", self.config.cluster_file().display());
                    }
                    *self.peer_urls.lock().unwrap_or_else(|e| e.into_inner()) = peer_urls;
                }
                Ok(client_urls.len())
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {REFRESH_TIMEOUT:?}"),
                };
                if !self.config.keep_endpoints_on_refresh_failure {
                    self.set_backends(&[]);
                }
                Err(why)
            }
        }
    }

    fn set_backends(&self, client_urls: &[String]) {
        let mut backends = self.backends.write().unwrap_or_else(|e| e.into_inner());
        let mut by_url = HashMap::new();
        let mut ring = HashRing::new();
        for url in client_urls {
            let backend = match backends.by_url.get(url) {
                // Keep the connection and any failure mark (etcd forgets marks on refresh,
                // etcd #3541; a member that just failed is not healthy because time passed).
                Some(b) => b.clone(),
                None => match Backend::new(url, self.config.dial_timeout, &self.members) {
                    Ok(b) => Arc::new(b),
                    Err(e) => {
                        warn!(target: "proxy", "skipping client URL {url:?}: {e}");
                        continue;
                    }
                },
            };
            for replica in 0..VIRTUAL_NODES {
                ring.add(RingPoint {
                    url: url.clone(),
                    replica,
                });
            }
            by_url.insert(url.clone(), backend);
        }
        let before: Vec<&String> = backends.by_url.keys().collect();
        let changed =
            before.len() != by_url.len() || before.iter().any(|u| !by_url.contains_key(*u));
        if changed {
            let mut urls: Vec<&String> = by_url.keys().collect();
            urls.sort();
            info!(target: "proxy", "endpoints: {urls:?}");
        }
        *backends = Backends { by_url, ring };
    }

    /// Refreshes every refresh interval (every second while no member is known, when the
    /// interval is etcd's default or longer) until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let empty = self
                .backends
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .by_url
                .is_empty();
            let incomplete = self.incomplete.load(std::sync::atomic::Ordering::Relaxed);
            let mut wait = self.config.refresh_interval;
            if (empty || incomplete) && wait >= EMPTY_RETRY {
                wait = EMPTY_RETRY;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.refresh().await {
                warn!(target: "proxy", "could not refresh the member list: {e}");
            }
        }
    }
}

/// What a member list tells the proxy.
struct Members {
    client_urls: Vec<String>,
    peer_urls: Vec<String>,
    /// some member has no client URL yet
    unpublished: bool,
}

/// The members' client URLs and peer URLs, from the first peer URL that answers.
async fn fetch_members(
    peer_urls: &[String],
    dialer: &ChannelDialer,
    dial_timeout: Duration,
) -> Result<Members, String> {
    let mut errors = Vec::new();
    for url in peer_urls {
        let configure = |endpoint: Endpoint| {
            if dial_timeout.is_zero() {
                endpoint
            } else {
                endpoint.connect_timeout(dial_timeout)
            }
        };
        let channel = match dialer.connect(url, configure).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{url}: {e}"));
                continue;
            }
        };
        match PeerClient::new(channel).members(MembersRequest {}).await {
            Ok(resp) => {
                let members = resp.into_inner().members;
                let mut client_urls: Vec<String> = members
                    .iter()
                    .flat_map(|m| m.client_urls.iter().cloned())
                    .collect();
                client_urls.sort();
                client_urls.dedup();
                let mut peer_urls: Vec<String> = members
                    .iter()
                    .flat_map(|m| m.peer_urls.iter().cloned())
                    .collect();
                peer_urls.sort();
                peer_urls.dedup();
                let unpublished = members.iter().any(|m| m.client_urls.is_empty());
                return Ok(Members {
                    client_urls,
                    peer_urls,
                    unpublished,
                });
            }
            Err(e) => errors.push(format!("{url}: {}", e.message())),
        }
    }
    Err(format!("no member answered: {}", errors.join("; ")))
}

/// Writes the cluster file as etcd does: a temporary file, fsynced, renamed over the old one.
fn persist(path: &Path, peer_urls: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("bak");
    let body = serde_json::to_vec(&ClusterFile {
        peer_urls: peer_urls.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyMode;

    fn director(urls: &[&str]) -> Director {
        let mut c = ProxyConfig::new(ProxyMode::On, std::env::temp_dir());
        c.initial_peer_urls = vec!["http://127.0.0.1:1".into()];
        c.failure_wait = Duration::from_millis(200);
        let d = Director::new(c).unwrap();
        d.set_backends(&urls.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        d
    }

    #[tokio::test]
    async fn the_ring_spreads_keys_and_orders_every_backend_once() {
        let d = director(&[
            "http://127.0.0.1:1001",
            "http://127.0.0.1:1002",
            "http://127.0.0.1:1003",
        ]);
        let mut first = HashMap::new();
        for i in 0..3000 {
            let order = d.pick(format!("key-{i}").as_bytes());
            assert_eq!(order.len(), 3);
            let mut urls: Vec<&str> = order.iter().map(|b| b.url.as_str()).collect();
            urls.sort();
            urls.dedup();
            assert_eq!(urls.len(), 3, "each backend once");
            *first.entry(order[0].url.clone()).or_insert(0) += 1;
            // the same key always goes to the same backend first
            assert_eq!(d.pick(format!("key-{i}").as_bytes())[0].url, order[0].url);
        }
        for (url, n) in first {
            assert!(
                (600..=1400).contains(&n),
                "{url} got {n} of 3000 keys first"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_backend_is_skipped_for_the_failure_wait_and_survives_a_refresh() {
        let d = director(&["http://127.0.0.1:1001", "http://127.0.0.1:1002"]);
        let order = d.pick(b"k");
        d.failed(&order[0]);
        let after = d.pick(b"k");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].url, order[1].url);
        d.set_backends(&[
            "http://127.0.0.1:1001".into(),
            "http://127.0.0.1:1002".into(),
        ]);
        assert_eq!(
            d.pick(b"k").len(),
            1,
            "a refresh does not forget the failure"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            d.pick(b"k")[0].url,
            order[0].url,
            "retried after the failure wait"
        );
    }

    #[test]
    fn the_cluster_file_is_etcds_json_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ProxyConfig::new(ProxyMode::On, dir.path().to_path_buf());
        persist(&c.cluster_file(), &["http://10.0.0.1:2380".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(c.cluster_file()).unwrap(),
            r#"{"PeerURLs":["http://10.0.0.1:2380"]}"#
        );
        c.initial_peer_urls = vec!["http://ignored:2380".into()];
        let d = Director::new(c).unwrap();
        assert_eq!(*d.peer_urls.lock().unwrap(), ["http://10.0.0.1:2380"]);
    }
}
