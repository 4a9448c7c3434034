//! `endpoint health`, `endpoint status` and `endpoint hashkv`, over `--endpoints` or, with
//! `--cluster`, every client URL in the member list.

use std::io::Write;

use ketch_api::etcdserverpb::RangeRequest;
use ketch_api::status::EtcdError;
use tokio::time::Instant;

use crate::cli::flags::FlagSet;
use crate::cli::parse::Invocation;
use crate::client::tls::TlsSetup;
use crate::client::{deadline_after, Client, ClientSettings};
use crate::error::{CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_ERROR};
use crate::global;
use crate::gofmt;
use crate::printer::{EpHashKv, EpHealth, EpStatus};

/// etcdctl's `endpointsFromCluster`: the `--endpoints` list as given, or with `--cluster` the
/// client URLs of every member (asked without credentials: the member list needs none).
async fn endpoints_from_cluster(flags: &FlagSet) -> CtlResult<Vec<String>> {
    if !flags.bool("cluster") {
        return Ok(flags.strings("endpoints"));
    }
    let settings = ClientSettings {
        endpoints: global::endpoints(flags)?,
        dial_timeout: global::dial_timeout(flags),
        keepalive: global::keepalive(flags),
        secure: global::secure_settings(flags)?,
        credentials: None,
    };
    let client = Client::new(settings)
        .await
        .map_err(|e| CtlError::error(e.to_string()))?;
    let deadline = deadline_after(global::command_timeout(flags));
    let members = client.member_list(deadline).await.map_err(|e| {
        CtlError::error(format!(
            "failed to fetch endpoints from etcd cluster member list: {e}"
        ))
    })?;
    Ok(members
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

/// Check one endpoint: a linearizable read of the key `health` with a client of its own.
/// Permission denied still proves the cluster committed the read.
async fn check(settings: ClientSettings, timeout: std::time::Duration) -> EpHealth {
    let ep = settings.endpoints[0].clone();
    let client = match Client::new(settings).await {
        Ok(c) => c,
        Err(e) => {
            return EpHealth {
                ep,
                health: false,
                took: String::new(),
                error: e.to_string(),
            }
        }
    };
    let start = Instant::now();
    let req = RangeRequest {
        key: b"health".to_vec().into(),
        ..Default::default()
    };
    let result = client.range(req, deadline_after(timeout)).await;
    let took = gofmt::duration_string(start.elapsed().as_nanos() as i64);
    match result {
        Ok(_) => EpHealth {
            ep,
            health: true,
            took,
            error: String::new(),
        },
        Err(e) if e.is(&EtcdError::PermissionDenied) => EpHealth {
            ep,
            health: true,
            took,
            error: String::new(),
        },
        Err(e) => EpHealth {
            ep,
            health: false,
            took,
            error: e.to_string(),
        },
    }
}

pub async fn health(inv: &mut Invocation<'_>) -> CtlResult {
    let flags = &mut inv.flags;
    global::apply_env(flags)?;
    let printer = global::display(flags)?;
    let secure = global::secure_settings(flags)?;
    let (dial_timeout, keepalive) = (global::dial_timeout(flags), global::keepalive(flags));
    let credentials = global::credentials(flags)?;
    // etcdctl builds every endpoint's TLS configuration before checking any.
    TlsSetup::from_settings(&secure).map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
    let endpoints = endpoints_from_cluster(flags).await?;
    let timeout = global::command_timeout(flags);
    let mut checks = tokio::task::JoinSet::new();
    for ep in endpoints {
        let settings = ClientSettings {
            endpoints: vec![ep],
            dial_timeout,
            keepalive,
            secure: secure.clone(),
            credentials: credentials.clone(),
        };
        checks.spawn(check(settings, timeout));
    }
    // Results in the order the checks finish, as etcdctl collects them.
    let mut list = Vec::new();
    while let Some(result) = checks.join_next().await {
        if let Ok(h) = result {
            list.push(h);
        }
    }
    printer.endpoint_health(
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
        &list,
    )?;
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(CtlError::error("unhealthy cluster"));
    }
    Ok(())
}

pub async fn status(inv: &mut Invocation<'_>) -> CtlResult {
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let mut list = Vec::new();
    let mut failed = false;
    for ep in endpoints_from_cluster(&inv.flags).await? {
        let deadline = deadline_after(global::command_timeout(&inv.flags));
        match client.status(&ep, deadline).await {
            Ok(resp) => list.push(EpStatus { ep, resp }),
            Err(e) => {
                failed = true;
                let _ = writeln!(
                    std::io::stderr(),
                    "Failed to get the status of endpoint {ep} ({e})"
                );
            }
        }
    }
    printer.endpoint_status(&mut std::io::stdout().lock(), &list)?;
    if failed {
        return Err(CtlError::silent(EXIT_ERROR));
    }
    Ok(())
}

pub async fn hashkv(inv: &mut Invocation<'_>) -> CtlResult {
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let rev = inv.flags.int("rev");
    let mut list = Vec::new();
    let mut last_error = None;
    for ep in endpoints_from_cluster(&inv.flags).await? {
        let deadline = deadline_after(global::command_timeout(&inv.flags));
        match client.hash_kv(&ep, rev, deadline).await {
            Ok(resp) => list.push(EpHashKv { ep, resp }),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "Failed to get the hash of endpoint {ep} ({e})"
                );
                last_error = Some(e);
            }
        }
    }
    printer.endpoint_hashkv(&mut std::io::stdout().lock(), &list)?;
    match last_error {
        Some(e) => Err(CtlError::error(e.to_string())),
        None => Ok(()),
    }
}
