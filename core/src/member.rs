//! Member: one running Ketch member — its Raft node and apply threads, WAL, MVCC store and
//! client servers — started from a [`MemberConfig`] and stopped as a unit.
//!
//! Start order: store, Raft state from the WAL, apply thread, Raft thread, client listeners,
//! then the member publishes its name and client URLs through the log (as etcd does). Stop
//! order is the reverse: listeners, Raft, apply (which makes a final durable commit).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ketch_api::ketchpb::{raft_request::Request, MemberAttributes};
use ketch_api::status::EtcdError;
use ketch_mvcc::Store;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::apply::wait::WaitRegistry;
use crate::apply::Applier;
use crate::config::{url_text, MemberConfig};
use crate::lease::primary::PrimaryLeases;
use crate::lease::Lessor;
use crate::raft::bootstrap;
use crate::raft::node::RaftNode;
use crate::raft::{RaftHandle, RaftMsg};
use crate::server::propose::IdGenerator;
use crate::server::{listen, Server};
use crate::transport::{self, PeerService, Transport};

/// How long a member waits for a TCP connection to a peer (etcd's dial timeout is 1 s).
const PEER_DIAL_TIMEOUT: Duration = Duration::from_secs(1);
use crate::watch::WatchHub;

/// Why a member could not start. The message is for the operator's log.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Other(String),
}

pub struct Member {
    server: Arc<Server>,
    client_addrs: Vec<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    serve_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Peer listeners: not drained gracefully (peers hold their streams open for good).
    peer_tasks: Vec<tokio::task::JoinHandle<()>>,
    raft_thread: Option<JoinHandle<()>>,
    apply_thread: Option<JoinHandle<()>>,
    watch_sync_thread: Option<JoinHandle<()>>,
}

impl Member {
    /// Starts the member and returns once its client listeners are bound and serving.
    pub async fn start(config: MemberConfig) -> Result<Member, StartError> {
        config.validate()?;
        let security = crate::security::Security::from_config(&config)?;
        let dialer = transport::PeerDialer::new(Some(security.peer_dialer.clone()));
        let joined = join_existing(&config, &dialer).await?;
        let cfg = config.clone();
        // Opening the store and replaying the WAL block on disk: keep them off async workers.
        let (store, booted) = tokio::task::spawn_blocking(move || -> Result<_, StartError> {
            let backend = cfg.backend_path();
            if let Some(dir) = backend.parent() {
                create_private_dir(dir)?;
            }
            create_private_dir(&cfg.data_dir)?;
            let store = Store::open(&backend).map_err(|e| {
                StartError::Other(format!("open backend {}: {e}", backend.display()))
            })?;
            let booted = bootstrap::boot(&cfg, &store, joined)?;
            Ok((Arc::new(store), booted))
        })
        .await
        .map_err(|e| StartError::Other(format!("start-up task failed: {e}")))??;

        let cluster = booted.cluster.clone();
        let waits = Arc::new(WaitRegistry::default());
        let (applied_tx, applied_rx) = watch::channel(store.applied_index());
        let (raft_tx, raft_rx) = std::sync::mpsc::channel();
        let raft = RaftHandle::new(raft_tx);
        let watch_hub = WatchHub::new(store.clone());
        let watch_sync_thread = watch_hub
            .start_sync_thread()
            .map_err(|e| StartError::Other(format!("spawn watch sync thread: {e}")))?;
        let lessor = Arc::new(Lessor::new(
            Lessor::min_ttl_for(config.heartbeat_interval, config.election_timeout),
            config
                .lease_checkpoint
                .then_some(crate::config::LEASE_CHECKPOINT_INTERVAL),
            config.lease_checkpoint_persist,
        ));
        {
            let (lessor, store) = (lessor.clone(), store.clone());
            tokio::task::spawn_blocking(move || lessor.recover(&store))
                .await
                .map_err(|e| StartError::Other(format!("lease recovery task failed: {e}")))?
                .map_err(|e| StartError::Other(format!("recover leases: {e}")))?;
        }
        let jwt = match config.auth_token.split_once(',') {
            Some(("jwt", options)) => Some(
                crate::auth::jwt::JwtTokens::from_options(options).map_err(StartError::Other)?,
            ),
            _ => None,
        };
        let auth = Arc::new(crate::auth::AuthStore::new(
            config.auth_token_ttl,
            config.bcrypt_cost,
            jwt,
        ));
        {
            let (auth, store) = (auth.clone(), store.clone());
            tokio::task::spawn_blocking(move || auth.recover(&store))
                .await
                .map_err(|e| StartError::Other(format!("auth recovery task failed: {e}")))?
                .map_err(|e| StartError::Other(format!("recover auth: {e}")))?;
        }
        let alarms = Arc::new(crate::alarm::Alarms::default());
        alarms
            .recover(&store)
            .map_err(|e| StartError::Other(format!("recover alarms: {e}")))?;
        let (apply_task, apply_rx) = Applier::channel(waits.clone());
        let applier = Applier::new(
            store.clone(),
            waits.clone(),
            cluster.clone(),
            applied_tx,
            raft.clone(),
            config.snapshot_count,
            watch_hub.clone(),
            lessor.clone(),
            auth.clone(),
            alarms.clone(),
        );
        let apply_thread = std::thread::Builder::new()
            .name("ketch-apply".into())
            .spawn(move || applier.run(apply_rx))
            .map_err(|e| StartError::Other(format!("spawn apply thread: {e}")))?;
        // Peers first: a member must accept Raft traffic before it starts sending any.
        let peer_listeners = listen::bind_clients(&config.listen_peer_urls).await?;
        let snap_dir = config.snap_dir();
        let transport = Transport::new(
            cluster.cluster_id,
            cluster.member_id,
            PEER_DIAL_TIMEOUT,
            raft.clone(),
            tokio::runtime::Handle::current(),
            transport::SnapshotSource {
                store: store.clone(),
                log: booted.raw.store().clone(),
                dir: snap_dir.clone(),
            },
            dialer,
        );
        transport.set_peers(&cluster.members());
        let node = RaftNode::new(
            booted.raw,
            booted.wal,
            raft.clone(),
            cluster.clone(),
            apply_task,
            transport.clone(),
            config.heartbeat_interval,
            config.snapshot_catchup_entries,
        );
        let raft_thread = std::thread::Builder::new()
            .name("ketch-raft".into())
            .spawn(move || node.run(raft_rx))
            .map_err(|e| StartError::Other(format!("spawn raft thread: {e}")))?;

        let request_timeout = Duration::from_secs(5) + 2 * config.election_timeout;
        let primary_leases = PrimaryLeases {
            lessor: lessor.clone(),
            cluster: cluster.clone(),
            applied: applied_rx.clone(),
            timeout: request_timeout,
        };
        let server = Arc::new(Server {
            store,
            cluster: cluster.clone(),
            raft,
            waits,
            applied: applied_rx,
            ids: IdGenerator::new(cluster.member_id),
            max_request_bytes: config.max_request_bytes,
            max_txn_ops: config.max_txn_ops,
            request_timeout,
            election_timeout: config.election_timeout,
            transport,
            strict_reconfig_check: config.strict_reconfig_check,
            initial_cluster_token: config.initial_cluster_token.clone(),
            watch_hub,
            watch_progress_interval: config.watch_progress_notify_interval,
            lessor,
            primary_leases: primary_leases.clone(),
            auth,
            alarms,
            quota_bytes: config.quota_bytes(),
            trusted_proxy_cns: config.trusted_proxy_cns.clone(),
        });
        let listeners = listen::bind_clients(&config.listen_client_urls).await?;
        let client_addrs = listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let serve_tasks = listen::serve_clients(
            server.clone(),
            listeners,
            security.client_listener.clone(),
            shutdown_rx.clone(),
        );
        let peer_service = {
            let (cluster, raft) = (cluster.clone(), server.raft.clone());
            move || {
                PeerService {
                    cluster: cluster.clone(),
                    raft: raft.clone(),
                    snap_dir: snap_dir.clone(),
                    leases: primary_leases.clone(),
                }
                .into_server()
            }
        };
        let peer_tasks = transport::serve_peers(
            peer_service,
            peer_listeners,
            security.peer_listener.clone(),
            shutdown_rx.clone(),
        );
        let retention = crate::compactor::parse_retention(
            config.auto_compaction_mode,
            &config.auto_compaction_retention,
        )
        .map_err(StartError::Other)?;
        tokio::spawn(crate::compactor::run(
            server.clone(),
            retention,
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::lease::primary::run(
            server.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(publish(server.clone(), config, shutdown_rx));
        Ok(Member {
            server,
            client_addrs,
            shutdown,
            serve_tasks,
            peer_tasks,
            raft_thread: Some(raft_thread),
            apply_thread: Some(apply_thread),
            watch_sync_thread: Some(watch_sync_thread),
        })
    }

    /// The addresses the client listeners are bound to (useful with port 0 in tests).
    pub fn client_addrs(&self) -> &[std::net::SocketAddr] {
        &self.client_addrs
    }

    /// Resolves a second after a membership change removed this member (etcd stops then).
    pub fn removed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let cluster = self.server.cluster.clone();
        async move {
            cluster.wait_removed().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub fn member_id(&self) -> u64 {
        self.server.cluster.member_id
    }

    /// Stops serving, stops Raft, lets the apply thread flush the store durably, and waits
    /// for every task and thread to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.serve_tasks.drain(..) {
            let _ = t.await;
        }
        for t in self.peer_tasks.drain(..) {
            t.abort();
        }
        let _ = self.server.raft.send(RaftMsg::Stop);
        let raft_thread = self.raft_thread.take();
        let apply_thread = self.apply_thread.take();
        self.server.watch_hub.stop();
        let watch_sync_thread = self.watch_sync_thread.take();
        let _ = tokio::task::spawn_blocking(move || {
            // The raft thread owns the apply task handle; when it ends, the apply channel
            // closes and the apply thread finishes after its final durable commit.
            if let Some(t) = raft_thread {
                let _ = t.join();
            }
            if let Some(t) = apply_thread {
                let _ = t.join();
            }
            if let Some(t) = watch_sync_thread {
                let _ = t.join();
            }
        })
        .await;
        info!(target: "etcdserver", "stopped member {:x}", self.server.cluster.member_id);
    }
}

/// A first start with `--initial-cluster-state existing` asks the other members listed in
/// `--initial-cluster` for the cluster (as etcd's GetClusterFromRemotePeers). Later starts
/// have a WAL and ignore the `--initial-*` flags.
async fn join_existing(
    cfg: &MemberConfig,
    dialer: &transport::PeerDialer,
) -> Result<Option<(u64, Vec<ketch_api::ketchpb::MemberRecord>)>, StartError> {
    if cfg.initial_cluster_state != crate::config::ClusterState::Existing
        || ketch_wal::Wal::exists(&cfg.wal_dir())
    {
        return Ok(None);
    }
    let mine: Vec<String> = cfg
        .initial_advertise_peer_urls
        .iter()
        .map(url_text)
        .collect();
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .map(|(_, u)| url_text(u))
        .filter(|u| !mine.contains(u))
        .collect();
    if others.is_empty() {
        return Err(StartError::Other(
            "--initial-cluster-state=existing: --initial-cluster names no other member to join"
                .into(),
        ));
    }
    let found = transport::fetch_cluster(&others, PEER_DIAL_TIMEOUT, dialer)
        .await
        .map_err(StartError::Other)?;
    Ok(Some(found))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StartError::Other(format!(
            "cannot access data directory {}: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Announces this member's name and client URLs through the log, retrying until it is
/// applied or the member stops, then logs the milestones etcd operators wait for.
async fn publish(server: Arc<Server>, config: MemberConfig, mut shutdown: watch::Receiver<bool>) {
    let client_urls: Vec<String> = config.advertise_client_urls.iter().map(url_text).collect();
    let attrs = MemberAttributes {
        id: server.cluster.member_id,
        name: config.name.clone(),
        client_urls: client_urls.clone(),
    };
    loop {
        let attempt = server.propose(Request::Publish(attrs.clone()));
        tokio::select! {
            res = attempt => match res {
                Ok(_) => break,
                Err(EtcdError::Stopped) => return,
                Err(e) => {
                    warn!(target: "etcdserver", "failed to publish local member to cluster through raft: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
    info!(
        target: "etcdserver",
        "published {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
        config.name,
        client_urls.join(" "),
        server.cluster.cluster_id
    );
    info!(target: "etcdserver/membership", "set the initial cluster version to 3.4");
    info!(target: "etcdserver/api", "enabled capabilities for version 3.4");
}
