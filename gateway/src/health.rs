//! `/health` and `/version`, with etcd 3.4's JSON bodies and status codes, and `/metrics` in
//! Prometheus's text format with etcd's metric names.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Router;

/// What the HTTP side needs to know about the server behind it.
pub trait HealthSource: Send + Sync + 'static {
    /// Healthy means what etcd means: no active alarm, a known leader, and a linearizable read
    /// that completes within a second.
    fn healthy(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;

    /// The server's metrics, in Prometheus's text exposition format.
    fn metrics(&self) -> String;
}

pub fn router(source: Arc<dyn HealthSource>) -> Router {
    Router::new()
        .route("/health", get_only(health))
        .route("/version", get_only(version))
        .route("/metrics", get_only(metrics))
        .with_state(source)
}

/// etcd answers other methods with 405, `Allow: GET` and Go's plain-text error body.
fn get_only<H, T>(handler: H) -> MethodRouter<Arc<dyn HealthSource>>
where
    H: axum::handler::Handler<T, Arc<dyn HealthSource>>,
    T: 'static,
{
    axum::routing::get(handler).fallback(any(|| async {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET"), (header::CONTENT_TYPE, TEXT_PLAIN)],
            "Method Not Allowed\n",
        )
            .into_response()
    }))
}

/// What Go's http server sends for a body it sniffs as text, and for `http.Error`.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

async fn health(State(source): State<Arc<dyn HealthSource>>) -> Response {
    // etcd writes the JSON without a content type (Go sniffs text/plain) and reports failure
    // through http.Error, which adds nosniff and a newline.
    if source.healthy().await {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT_PLAIN)],
            r#"{"health":"true"}"#,
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, TEXT_PLAIN),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            "{\"health\":\"false\"}\n",
        )
            .into_response()
    }
}

async fn metrics(State(source): State<Arc<dyn HealthSource>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        source.metrics(),
    )
        .into_response()
}

/// Writes one metric (HELP, TYPE and its sample) in Prometheus's text format.
pub fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    labels: &str,
    value: f64,
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

async fn version() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            r#"{{"etcdserver":"{}","etcdcluster":"{}"}}"#,
            ketch_api::ETCD_SERVER_VERSION,
            ketch_api::ETCD_CLUSTER_VERSION
        ),
    )
        .into_response()
}
