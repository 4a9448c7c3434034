//! ketch-gateway: everything a member or proxy answers on its client port that is not gRPC —
//! `/health` and `/version` now, the v3 JSON gateway, v2 keys and `/metrics` as they land. The
//! gRPC services and these routes share one listener: [`health::router`] is merged into the
//! tonic router, so HTTP/1.1 clients (curl, load balancers' probes) and gRPC clients use the
//! same port, as with etcd.

pub mod health;
pub mod tls;
