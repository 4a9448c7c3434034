//! `lease grant|revoke|timetolive|list|keep-alive`, and the keep-alive loop that `lock` and
//! `elect` sessions share (clientv3's `Lease.KeepAlive`).

use std::io::Write;
use std::time::Duration;

use ketch_api::etcdserverpb::lease_client::LeaseClient;
use ketch_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::parse::Invocation;
use crate::client::{deadline_after, Client, RpcError};
use crate::error::{CtlError, CtlResult, EXIT_BAD_CONNECTION};
use crate::global;
use crate::gofmt;

/// clientv3's `ErrLeaseNotFound`, which `KeepAliveOnce` returns for a TTL of 0 or less.
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// etcdctl's `leaseFromArgs`: a lease id in hexadecimal.
pub fn lease_from_arg(arg: &[u8]) -> CtlResult<i64> {
    gofmt::parse_int(&String::from_utf8_lossy(arg), 16).map_err(|(_, e)| {
        CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex"))
    })
}

pub async fn grant(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.len() != 1 {
        return Err(CtlError::bad_args("lease grant command needs TTL argument"));
    }
    let ttl = gofmt::parse_int(&String::from_utf8_lossy(&inv.args[0]), 10)
        .map_err(|(_, e)| CtlError::bad_args(format!("bad TTL ({e})")))?;
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let resp = client
        .lease_grant(LeaseGrantRequest { ttl, id: 0 }, deadline)
        .await
        .map_err(|e| CtlError::error(format!("failed to grant lease ({e})")))?;
    printer.grant(&mut std::io::stdout().lock(), &resp)
}

pub async fn revoke(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.len() != 1 {
        return Err(CtlError::bad_args("lease revoke command needs 1 argument"));
    }
    let id = lease_from_arg(&inv.args[0])?;
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let resp = client
        .lease_revoke(LeaseRevokeRequest { id }, deadline)
        .await
        .map_err(|e| CtlError::error(format!("failed to revoke lease ({e})")))?;
    printer.revoke(&mut std::io::stdout().lock(), id, &resp)
}

pub async fn time_to_live(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.len() != 1 {
        return Err(CtlError::bad_args(
            "lease timetolive command needs lease ID as argument",
        ));
    }
    let keys = inv.flags.bool("keys");
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let id = lease_from_arg(&inv.args[0])?;
    let resp = client
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys }, None)
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.to_string()))?;
    printer.time_to_live(&mut std::io::stdout().lock(), &resp, keys)
}

pub async fn list(inv: &mut Invocation<'_>) -> CtlResult {
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let resp = client
        .lease_leases(None)
        .await
        .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e.to_string()))?;
    printer.leases(&mut std::io::stdout().lock(), &resp)
}

pub async fn keep_alive(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.len() != 1 {
        return Err(CtlError::bad_args(
            "lease keep-alive command needs lease ID as argument",
        ));
    }
    let id = lease_from_arg(&inv.args[0])?;
    let once = inv.flags.bool("once");
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    if once {
        let resp = keep_alive_once(&client, id)
            .await
            .map_err(|e| CtlError::new(EXIT_BAD_CONNECTION, e))?;
        return printer.keep_alive(&mut std::io::stdout().lock(), &resp);
    }
    let mut failed = None;
    keep_alive_loop(&client, id, |resp| {
        let mut out = std::io::stdout().lock();
        if let Err(e) = printer.keep_alive(&mut out, resp).and_then(|()| {
            out.flush()?;
            Ok(())
        }) {
            failed = Some(e);
            return false;
        }
        true
    })
    .await;
    if let Some(e) = failed {
        return Err(e);
    }
    if printer.is_simple() {
        writeln!(
            std::io::stdout().lock(),
            "lease {id:016x} expired or revoked."
        )?;
    }
    Ok(())
}

/// One keep-alive request and its answer (clientv3's `KeepAliveOnce`).
async fn keep_alive_once(client: &Client, id: i64) -> Result<LeaseKeepAliveResponse, String> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(LeaseKeepAliveRequest { id }).await;
    let (channel, request) = client
        .stream_request(ReceiverStream::new(rx), false)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = LeaseClient::new(channel)
        .lease_keep_alive(request)
        .await
        .map_err(|s| RpcError::from_status(&s).to_string())?
        .into_inner();
    match stream.message().await {
        Ok(Some(resp)) if resp.ttl > 0 => Ok(resp),
        Ok(Some(_)) => Err(LEASE_NOT_FOUND.to_string()),
        Ok(None) => Err("context canceled".to_string()),
        Err(s) => Err(RpcError::from_status(&s).to_string()),
    }
}

/// clientv3's keep-alive for one lease: a request now, another a third of the TTL after each
/// answer, until the server answers with no TTL left (expired or revoked), no answer arrives
/// within the TTL, or `each` returns false. A broken stream is reopened after half a second.
pub async fn keep_alive_loop(
    client: &Client,
    id: i64,
    mut each: impl FnMut(&LeaseKeepAliveResponse) -> bool,
) {
    // clientv3 gives up on a lease that has gone unanswered for its TTL (the first one counts
    // from the default 5s).
    let mut expires = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Queued before the call: the server sends its headers with its first answer.
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return;
        }
        let Ok((channel, request)) = client.stream_request(ReceiverStream::new(rx), false).await
        else {
            return;
        };
        let mut stream = match LeaseClient::new(channel).lease_keep_alive(request).await {
            Ok(s) => s.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout_at(expires, stream.message()).await;
            match next {
                Err(_) => return,
                Ok(Ok(Some(resp))) => {
                    if resp.ttl <= 0 {
                        return;
                    }
                    let ttl = Duration::from_secs(resp.ttl as u64);
                    expires = tokio::time::Instant::now() + ttl;
                    if !each(&resp) {
                        return;
                    }
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(ttl / 3).await;
                        let _ = tx.send(LeaseKeepAliveRequest { id }).await;
                    });
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ketch_api::etcdserverpb::{
        LeaseGrantResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseStatus,
        LeaseTimeToLiveResponse, ResponseHeader,
    };

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 6328709751833505057,
            member_id: 11719934994822390420,
            revision: 4,
            raft_term: 2,
        })
    }

    fn print(
        format: &str,
        f: impl Fn(&dyn crate::printer::Printer, &mut Vec<u8>) -> CtlResult,
    ) -> Result<String, String> {
        let p = crate::printer::new_printer(format, false).unwrap();
        let mut out = Vec::new();
        f(p.as_ref(), &mut out).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Outputs etcdctl 3.4 printed for these responses.
    #[test]
    fn lease_outputs_match_etcdctl() {
        let grant = LeaseGrantResponse {
            header: header(),
            id: 7103480916940653590,
            ttl: 50,
            error: String::new(),
        };
        assert_eq!(
            print("simple", |p, o| p.grant(o, &grant)).unwrap(),
            "lease 6294a24213038416 granted with TTL(50s)\n"
        );
        assert_eq!(
            print("json", |p, o| p.grant(o, &grant)).unwrap(),
            "{\"cluster_id\":6328709751833505057,\"member_id\":11719934994822390420,\"revision\":4,\"raft_term\":2,\"ID\":7103480916940653590,\"TTL\":50,\"Error\":\"\"}\n"
        );
        let ttl = LeaseTimeToLiveResponse {
            header: header(),
            id: 7103480916940653586,
            ttl: 99,
            granted_ttl: 100,
            keys: vec![b"lk".to_vec().into(), b"lk2".to_vec().into()],
        };
        assert_eq!(
            print("simple", |p, o| p.time_to_live(o, &ttl, true)).unwrap(),
            "lease 6294a24213038412 granted with TTL(100s), remaining(99s), attached keys([lk lk2])\n"
        );
        assert_eq!(
            print("json", |p, o| p.time_to_live(o, &ttl, true)).unwrap(),
            "{\"cluster_id\":6328709751833505057,\"member_id\":11719934994822390420,\"revision\":4,\"raft_term\":2,\"id\":7103480916940653586,\"ttl\":99,\"granted-ttl\":100,\"keys\":[\"bGs=\",\"bGsy\"]}\n"
        );
        let expired = LeaseTimeToLiveResponse {
            header: header(),
            id: 0x1234,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            print("simple", |p, o| p.time_to_live(o, &expired, false)).unwrap(),
            "lease 0000000000001234 already expired\n"
        );
        let list = LeaseLeasesResponse {
            header: header(),
            leases: vec![LeaseStatus {
                id: 7103480916940653576,
            }],
        };
        assert_eq!(
            print("fields", |p, o| p.leases(o, &list)).unwrap(),
            "\"ClusterID\" : 6328709751833505057\n\"MemberID\" : 11719934994822390420\n\"Revision\" : 4\n\"RaftTerm\" : 2\n\"ID\" : 7103480916940653576\n"
        );
        let revoke = LeaseRevokeResponse { header: header() };
        assert_eq!(
            print("protobuf", |p, o| p.revoke(o, 1, &revoke)).unwrap_err(),
            "marshal unsupported for type clientv3.LeaseRevokeResponse ({cluster_id:6328709751833505057 member_id:11719934994822390420 revision:4 raft_term:2 })"
        );
        assert_eq!(
            print("table", |p, o| p.grant(o, &grant)).unwrap_err(),
            "table not supported as output format"
        );
    }

    #[test]
    fn lease_ids_are_hex() {
        assert_eq!(lease_from_arg(b"1a").unwrap(), 26);
        assert_eq!(lease_from_arg(b"7fffffffffffffff").unwrap(), i64::MAX);
        let e = lease_from_arg(b"zz").unwrap_err();
        assert_eq!(e.code, 128);
        assert_eq!(
            e.to_string(),
            "bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }
}
