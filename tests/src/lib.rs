//! ketch-tests: the process-level testkit. Real `ketch` binaries (and real etcd 3.4.23 as the
//! reference) run as child processes on free loopback ports with temporary data dirs, and the
//! real `etcdctl` drives them.
//!
//! - [`Server`]: one single-member cluster of a [`Kind`] (ketch or etcd, same flags):
//!   start, wait_ready, kill9, stop (SIGTERM), restart (same dir and ports).
//! - [`Etcdctl`]: runs `etcdctl --endpoints=… <args>` with optional stdin, bounded.
//! - [`BackgroundCtl`]: an etcdctl left running (`watch`, `watch -i`), output collected as it
//!   comes, bounded waits for it.
//! - [`compare`]: the same etcdctl script against fresh ketch and fresh etcd, outputs equal
//!   after [`normalize`] (ids, terms, ports, timings — never revisions).
//! - [`http_get`]: a minimal HTTP/1.1 GET for `/health` and `/version`.
//! - [`grpc`]: a bounded tonic KV client, for what etcdctl 3.4 cannot send.
//! - [`tls`]: certificates made in-process ([`TestCerts`]), etcdctl's TLS flags and the HTTPS
//!   readiness probe of servers started with `ServerBuilder::client_tls`.
//!
//! `KETCH_TESTS_TARGET=etcd` makes [`Kind::Ketch`] run real etcd: a way to check the test
//! bodies themselves while the ketch server is not ready. CI never sets it.

pub mod background;
pub mod bins;
pub mod cluster;
pub mod compare;
pub mod diff;
pub mod etcdctl;
pub mod grpc;
pub mod http;
pub mod normalize;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod tls;

pub use background::BackgroundCtl;
pub use bins::{ketch_is_substituted, Kind};
pub use cluster::Cluster;
pub use compare::{compare, compare_scenario, ctl, run_script, Comparison, Step};
pub use etcdctl::{txn_input, CtlOutput, Etcdctl};
pub use http::{http_get, http_request, HttpResponse};
pub use server::{Server, ServerBuilder};
pub use tls::{ClientTls, TestCerts};
