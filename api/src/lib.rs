//! ketch-api: the wire. etcd's v3 client API as Rust types and tonic services, Ketch's own
//! Raft records, etcd's error catalogue ([`status`]) and the checks etcd makes on a request
//! before proposing it ([`validate`]). No I/O and no runtime live here, save the adapter and
//! TCP connector every Ketch process puts under its HTTP/2 connections ([`coalesce`]).

pub mod coalesce;
pub mod range_response;
pub mod status;
pub mod validate;
pub mod watch;

#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    pub use crate::range_response::RangeResponse;
}
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
#[allow(clippy::all, missing_docs)]
pub mod ketchpb {
    tonic::include_proto!("ketchpb");
}

/// The etcd API version Ketch speaks; `etcdctl version` and `/version` report it.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
/// The etcd server version Ketch presents itself as to clients that gate features on it.
pub const ETCD_SERVER_VERSION: &str = "3.4.23";
