//! `lock` and `elect`, with clientv3's concurrency recipes so they interoperate with etcdctl:
//! a session is a lease (kept alive while the command runs); a lock or a candidacy is the key
//! `<name>/<lease id in hex>` under that lease, and it is held once every key under `<name>/`
//! created before it is gone.

use std::io::Write;

use ketch_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ketch_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use ketch_api::etcdserverpb::request_op::Request;
use ketch_api::etcdserverpb::response_op::Response;
use ketch_api::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
};
use ketch_api::mvccpb::KeyValue;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::parse::Invocation;
use crate::client::{Client, RpcError};
use crate::error::{CtlError, CtlResult};
use crate::global;
use crate::kv::prefix_end;
use crate::lease::keep_alive_loop;
use crate::watch::{exec_error, Watcher};

/// Why waiting for a lock or an election stopped.
#[derive(Debug)]
enum WaitError {
    /// SIGINT or SIGTERM (Go's `context canceled`).
    Canceled,
    Rpc(RpcError),
    /// The watch ended before the key was deleted.
    LostWatcher,
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Canceled => f.write_str("context canceled"),
            WaitError::Rpc(e) => write!(f, "{e}"),
            WaitError::LostWatcher => f.write_str("lost watcher waiting for delete"),
        }
    }
}

impl From<RpcError> for WaitError {
    fn from(e: RpcError) -> Self {
        WaitError::Rpc(e)
    }
}

/// SIGINT or SIGTERM, as etcdctl's `signal.Notify(sigc, SIGINT, SIGTERM)` catches them.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> CtlResult<Signals> {
        let e = |e: std::io::Error| CtlError::error(e.to_string());
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(e)?,
            term: signal(SignalKind::terminate()).map_err(e)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

fn cmp_create_revision(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec().into(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

fn op(r: Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

/// clientv3's `WithFirstCreate` (or `WithLastCreate`) over a prefix: the oldest (newest) key.
fn by_create(pfx: &[u8], order: SortOrder, max_create_rev: i64) -> RangeRequest {
    RangeRequest {
        key: pfx.to_vec().into(),
        range_end: prefix_end(pfx).into(),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

fn range_of(resp: &TxnResponse, i: usize) -> RangeResponse {
    match resp.responses.get(i).and_then(|r| r.response.clone()) {
        Some(Response::ResponseRange(r)) => r,
        _ => RangeResponse::default(),
    }
}

/// clientv3's `waitDelete`: watch `key` from `rev` until it is deleted.
async fn wait_delete(client: &Client, key: &[u8], rev: i64) -> Result<(), WaitError> {
    let create = WatchCreateRequest {
        key: key.to_vec().into(),
        start_revision: rev,
        ..Default::default()
    };
    let mut w = Watcher::open(client, create, false).await?;
    while let Some(resp) = w.next().await {
        if resp.events.iter().any(|e| e.r#type == 1) {
            return Ok(());
        }
        if resp.canceled {
            break;
        }
    }
    Err(WaitError::LostWatcher)
}

/// clientv3's `waitDeletes`: until no key under `pfx` created at or before `max_create_rev`
/// remains, wait for the newest of them to go.
async fn wait_deletes(
    client: &Client,
    pfx: &[u8],
    max_create_rev: i64,
) -> Result<Option<ResponseHeader>, WaitError> {
    loop {
        let resp = client
            .range(by_create(pfx, SortOrder::Descend, max_create_rev), None)
            .await?;
        let Some(last) = resp.kvs.first() else {
            return Ok(resp.header);
        };
        let rev = resp.header.map_or(0, |h| h.revision);
        wait_delete(client, &last.key, rev).await?;
    }
}

/// A session: a lease with the given TTL, kept alive by [`keep_alive_loop`] while the
/// command's future runs alongside it.
async fn grant_session(client: &Client, ttl: i64) -> CtlResult<i64> {
    let resp = client
        .lease_grant(LeaseGrantRequest { ttl, id: 0 }, None)
        .await
        .map_err(|e| CtlError::error(e.to_string()))?;
    Ok(resp.id)
}

/// The session's keep-alive, polled alongside whatever the command waits for.
struct Session<F: std::future::Future<Output = ()>> {
    keep_alive: std::pin::Pin<Box<F>>,
    expired: bool,
}

impl<F: std::future::Future<Output = ()>> Session<F> {
    fn new(keep_alive: F) -> Self {
        Session {
            keep_alive: Box::pin(keep_alive),
            expired: false,
        }
    }

    /// Go's `<-s.Done()`: returns once the lease could no longer be kept alive.
    async fn done(&mut self) {
        if !self.expired {
            self.keep_alive.as_mut().await;
            self.expired = true;
        }
    }

    /// Keep the lease alive while something else is awaited; never returns.
    async fn keep(&mut self) {
        self.done().await;
        std::future::pending::<()>().await
    }
}

/// Held key of a lock or a candidacy: `<name>/<lease hex>`.
pub fn session_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = name.to_vec();
    k.push(b'/');
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

/// clientv3's `Mutex.Lock`: the key's revision and the header it was acquired at.
async fn mutex_lock(
    client: &Client,
    pfx: &[u8],
    key: &[u8],
    lease: i64,
) -> Result<ResponseHeader, WaitError> {
    let txn = TxnRequest {
        compare: vec![cmp_create_revision(key, 0)],
        success: vec![
            op(Request::RequestPut(PutRequest {
                key: key.to_vec().into(),
                lease,
                ..Default::default()
            })),
            op(Request::RequestRange(by_create(pfx, SortOrder::Ascend, 0))),
        ],
        failure: vec![
            op(Request::RequestRange(RangeRequest {
                key: key.to_vec().into(),
                ..Default::default()
            })),
            op(Request::RequestRange(by_create(pfx, SortOrder::Ascend, 0))),
        ],
    };
    let resp = client.txn(txn, None).await?;
    let header = resp.header.unwrap_or_default();
    let mut my_rev = header.revision;
    if !resp.succeeded {
        my_rev = range_of(&resp, 0)
            .kvs
            .first()
            .map_or(0, |kv| kv.create_revision);
    }
    let owner = range_of(&resp, 1);
    if owner
        .kvs
        .first()
        .is_none_or(|kv| kv.create_revision == my_rev)
    {
        return Ok(header);
    }
    let hdr = wait_deletes(client, pfx, my_rev - 1).await?;
    Ok(hdr.unwrap_or_default())
}

async fn get_key(client: &Client, key: &[u8]) -> Result<RangeResponse, RpcError> {
    client
        .range(
            RangeRequest {
                key: key.to_vec().into(),
                ..Default::default()
            },
            None,
        )
        .await
}

async fn delete_key(client: &Client, key: &[u8]) -> Result<(), RpcError> {
    client
        .delete_range(
            DeleteRangeRequest {
                key: key.to_vec().into(),
                ..Default::default()
            },
            None,
        )
        .await
        .map(|_| ())
}

pub async fn lock(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.is_empty() {
        return Err(CtlError::bad_args(
            "lock takes a lock name argument and an optional command to execute",
        ));
    }
    let ttl = inv.flags.int("ttl");
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let name = inv.args[0].clone();
    let cmd_args = inv.args[1..].to_vec();
    let lease = grant_session(&client, ttl).await?;
    let mut session = Session::new(keep_alive_loop(&client, lease, |_| true));
    let mut pfx = name.clone();
    pfx.push(b'/');
    let key = session_key(&name, lease);
    let mut signals = Signals::install()?;

    let acquired = tokio::select! {
        r = mutex_lock(&client, &pfx, &key, lease) => r,
        _ = signals.recv() => Err(WaitError::Canceled),
        _ = session.keep() => unreachable!(),
    };
    let header = match acquired {
        Ok(h) => h,
        Err(e) => {
            // Mutex.Lock gives up its place in line when the wait fails.
            let _ = delete_key(&client, &key).await;
            return Err(CtlError::error(e.to_string()));
        }
    };

    if !cmd_args.is_empty() {
        use std::os::unix::ffi::OsStrExt;
        let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
        let mut command = std::process::Command::new(os(&cmd_args[0]));
        command.args(cmd_args[1..].iter().map(|a| os(a)));
        // etcdctl puts these first and the environment after: a variable already set wins.
        if std::env::var_os("ETCD_LOCK_KEY").is_none() {
            command.env("ETCD_LOCK_KEY", os(&key));
        }
        if std::env::var_os("ETCD_LOCK_REV").is_none() {
            command.env("ETCD_LOCK_REV", header.revision.to_string());
        }
        command.stdin(std::process::Stdio::null());
        std::io::stdout().flush()?;
        let mut child = command.spawn();
        let status = match &mut child {
            Ok(c) => {
                let child_wait = async {
                    loop {
                        match c.try_wait() {
                            Ok(Some(s)) => return Ok(s),
                            Ok(None) => {
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await
                            }
                            Err(e) => return Err(e),
                        }
                    }
                };
                tokio::select! {
                    s = child_wait => Some(s),
                    _ = session.keep() => None,
                }
            }
            Err(_) => None,
        };
        let unlocked = delete_key(&client, &key).await;
        let run_err = match (&child, status) {
            (Err(e), _) => Some(exec_error(&cmd_args[0], e)),
            (Ok(_), Some(Ok(s))) if s.success() => None,
            (Ok(_), Some(Ok(s))) => Some(match s.code() {
                Some(c) => format!("exit status {c}"),
                None => "signal: killed".to_string(),
            }),
            (Ok(_), Some(Err(e))) => Some(e.to_string()),
            (Ok(_), None) => None,
        };
        if let Some(e) = run_err {
            return Err(CtlError::error(e));
        }
        return unlocked.map_err(|e| CtlError::error(e.to_string()));
    }

    let resp = get_key(&client, &key)
        .await
        .map_err(|e| CtlError::error(e.to_string()))?;
    if resp.kvs.is_empty() {
        return Err(CtlError::error("lock lost on init"));
    }
    {
        let mut out = std::io::stdout().lock();
        printer.get(&mut out, &resp)?;
        out.flush()?;
    }
    tokio::select! {
        _ = signals.recv() => {
            delete_key(&client, &key).await.map_err(|e| CtlError::error(e.to_string()))
        }
        _ = session.done() => Err(CtlError::error("session expired")),
    }
}

/// clientv3's `Election.Campaign`: the leader key's create revision once elected.
async fn campaign(
    client: &Client,
    pfx: &[u8],
    key: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<i64, WaitError> {
    let txn = TxnRequest {
        compare: vec![cmp_create_revision(key, 0)],
        success: vec![op(Request::RequestPut(PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            lease,
            ..Default::default()
        }))],
        failure: vec![op(Request::RequestRange(RangeRequest {
            key: key.to_vec().into(),
            ..Default::default()
        }))],
    };
    let resp = client.txn(txn, None).await?;
    let mut leader_rev = resp.header.unwrap_or_default().revision;
    if !resp.succeeded {
        let kv = range_of(&resp, 0).kvs.first().cloned().unwrap_or_default();
        leader_rev = kv.create_revision;
        if kv.value != value {
            // Proclaim: replace the value while the key is still ours.
            let txn = TxnRequest {
                compare: vec![cmp_create_revision(key, leader_rev)],
                success: vec![op(Request::RequestPut(PutRequest {
                    key: key.to_vec().into(),
                    value: value.to_vec().into(),
                    lease,
                    ..Default::default()
                }))],
                failure: vec![],
            };
            client.txn(txn, None).await?;
        }
    }
    wait_deletes(client, pfx, leader_rev - 1).await?;
    Ok(leader_rev)
}

/// clientv3's `Election.Resign`: delete the leader key if it is still the one we created.
async fn resign(client: &Client, key: &[u8], leader_rev: i64) -> Result<(), RpcError> {
    let txn = TxnRequest {
        compare: vec![cmp_create_revision(key, leader_rev)],
        success: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec().into(),
            ..Default::default()
        }))],
        failure: vec![],
    };
    client.txn(txn, None).await.map(|_| ())
}

pub async fn elect(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.len() != 1 && inv.args.len() != 2 {
        return Err(CtlError::bad_args(
            "elect takes one election name argument and an optional proposal argument",
        ));
    }
    let listen = inv.flags.bool("listen");
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    if inv.args.len() == 1 && !listen {
        return Err(CtlError::bad_args("no proposal argument but -l not set"));
    }
    if inv.args.len() == 2 && listen {
        return Err(CtlError::bad_args("proposal given but -l is set"));
    }
    let name = inv.args[0].clone();
    let mut pfx = name.clone();
    pfx.push(b'/');
    // concurrency.NewSession's default TTL.
    let lease = grant_session(&client, 60).await?;
    let mut session = Session::new(keep_alive_loop(&client, lease, |_| true));
    let mut signals = Signals::install()?;

    if inv.args.len() == 1 {
        let observed = tokio::select! {
            r = observe(&client, &pfx, printer.as_ref()) => r,
            _ = signals.recv() => return Ok(()),
            _ = session.keep() => unreachable!(),
        };
        return match observed {
            Err(e) => Err(e),
            Ok(()) => Err(CtlError::error("elect: observer lost")),
        };
    }

    let key = session_key(&name, lease);
    let proposal = inv.args[1].clone();
    let elected = tokio::select! {
        r = campaign(&client, &pfx, &key, lease, &proposal) => r,
        _ = signals.recv() => Err(WaitError::Canceled),
        _ = session.keep() => unreachable!(),
    };
    let leader_rev = match elected {
        Ok(rev) => rev,
        Err(e) => {
            if matches!(e, WaitError::Canceled) {
                let _ = delete_key(&client, &key).await;
            }
            return Err(CtlError::error(e.to_string()));
        }
    };
    let resp = get_key(&client, &key)
        .await
        .map_err(|e| CtlError::error(e.to_string()))?;
    {
        let mut out = std::io::stdout().lock();
        printer.get(&mut out, &resp)?;
        out.flush()?;
    }
    tokio::select! {
        _ = signals.recv() => {}
        _ = session.done() => return Err(CtlError::error("elect: session expired")),
    }
    resign(&client, &key, leader_rev)
        .await
        .map_err(|e| CtlError::error(e.to_string()))
}

/// clientv3's `Election.Observe`, printing each leader value; returns when a call or watch
/// fails.
async fn observe(client: &Client, pfx: &[u8], printer: &dyn crate::printer::Printer) -> CtlResult {
    let show = |resp: &RangeResponse| -> CtlResult {
        let mut out = std::io::stdout().lock();
        printer.get(&mut out, resp)?;
        out.flush()?;
        Ok(())
    };
    loop {
        let Ok(mut base) = client
            .range(by_create(pfx, SortOrder::Ascend, 0), None)
            .await
        else {
            return Ok(());
        };
        let (header, kv): (ResponseHeader, KeyValue) = match base.kvs.first() {
            Some(kv) => (base.header.unwrap_or_default(), kv.clone()),
            None => {
                let create = WatchCreateRequest {
                    key: pfx.to_vec().into(),
                    range_end: prefix_end(pfx).into(),
                    start_revision: base.header.unwrap_or_default().revision,
                    ..Default::default()
                };
                let Ok(mut w) = Watcher::open(client, create, false).await else {
                    return Ok(());
                };
                let mut found = None;
                while found.is_none() {
                    let Some(wr) = w.next().await else {
                        return Ok(());
                    };
                    if wr.canceled {
                        return Ok(());
                    }
                    if let Some(ev) = wr.events.iter().find(|e| e.r#type == 0) {
                        let kv = ev.kv.clone().unwrap_or_default();
                        let mut h = wr.header.unwrap_or_default();
                        h.revision = kv.mod_revision;
                        found = Some((h, kv));
                    }
                }
                found.expect("found")
            }
        };
        show(&RangeResponse {
            header: Some(header),
            kvs: vec![kv.clone()],
            ..Default::default()
        })?;
        let create = WatchCreateRequest {
            key: kv.key.clone(),
            start_revision: header.revision + 1,
            ..Default::default()
        };
        let Ok(mut w) = Watcher::open(client, create, false).await else {
            return Ok(());
        };
        'deleted: loop {
            let Some(wr) = w.next().await else {
                return Ok(());
            };
            for ev in &wr.events {
                if ev.r#type == 1 {
                    break 'deleted;
                }
                base.header = wr.header;
                base.kvs = vec![ev.kv.clone().unwrap_or_default()];
                show(&base)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_name_slash_lease_hex() {
        assert_eq!(
            session_key(b"mylock", 0x6294a24213038435),
            b"mylock/6294a24213038435"
        );
        assert_eq!(session_key(b"e", 0x1a), b"e/1a");
    }

    #[test]
    fn oldest_and_newest_key_queries() {
        let r = by_create(b"l/", SortOrder::Descend, 7);
        assert_eq!(
            (&r.key[..], &r.range_end[..], r.limit, r.max_create_revision),
            (&b"l/"[..], &b"l0"[..], 1, 7)
        );
        assert_eq!(r.sort_target, SortTarget::Create as i32);
    }
}
