//! Process-level tests of the ketch server: the real etcdctl drives real processes on
//! loopback, and every behaviour is compared with real etcd 3.4.23 (see the `ketch-tests`
//! library). Modules by feature.

mod auth;
mod cluster;
mod compaction;
mod defrag;
mod durability;
mod harness;
mod http_endpoints;
mod kv_del;
mod kv_get;
mod kv_put;
mod lease;
mod limits;
mod lock_election;
mod membership;
mod memory;
mod output_formats;
mod proxy;
mod proxy_cache;
mod proxy_watch;
mod quota;
mod snapshot;
mod tls;
mod txn;
mod txn_grpc;
mod wal_repair;
mod watch;
mod watch_fanout;
mod watch_grpc;
mod watch_server;
