//! `put`, `get`, `del` and `compaction`. The request builders are shared with `txn`, which
//! parses its request lines with the same flags and checks.

use std::io::{Read, Write};

use ketch_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use ketch_api::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};

use crate::cli::flags::FlagSet;
use crate::cli::parse::Invocation;
use crate::client::deadline_after;
use crate::error::{CtlError, CtlResult};
use crate::global;
use crate::gofmt;

/// clientv3's `getPrefix`: the first key after every key starting with `key`.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // No key follows all keys with this prefix: range to the end of the keyspace.
    vec![0]
}

const PUT_USAGE_ERROR: &str = "put command needs 1 argument and input from stdin or 2 arguments";

/// etcdctl's `getPutOp`: key from the arguments, value from the second argument or stdin.
pub fn put_request(
    args: &[Vec<u8>],
    flags: &FlagSet,
    stdin: &mut dyn Read,
) -> CtlResult<PutRequest> {
    let Some(key) = args.first() else {
        return Err(CtlError::bad_args(PUT_USAGE_ERROR));
    };
    let ignore_value = flags.bool("ignore-value");
    if ignore_value && args.len() > 1 {
        return Err(CtlError::bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let mut value = Vec::new();
    if !ignore_value {
        value = match args.get(1) {
            Some(v) => v.clone(),
            None => {
                let mut buf = Vec::new();
                if stdin.read_to_end(&mut buf).is_err() || buf.is_empty() {
                    return Err(CtlError::bad_args(PUT_USAGE_ERROR));
                }
                buf
            }
        };
    }
    let lease = gofmt::parse_int(&flags.string("lease"), 16)
        .map_err(|(_, e)| CtlError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(PutRequest {
        key: key.clone().into(),
        value: value.into(),
        lease,
        prev_kv: flags.bool("prev-kv"),
        ignore_value,
        ignore_lease: flags.bool("ignore-lease"),
    })
}

/// `[key, range_end)` for `--prefix`/`--from-key` as etcdctl sets them up; an empty key
/// means the whole keyspace.
fn key_range(
    mut key: Vec<u8>,
    explicit_end: Option<&Vec<u8>>,
    prefix: bool,
    from_key: bool,
) -> (Vec<u8>, Vec<u8>) {
    let mut end = explicit_end.cloned().unwrap_or_default();
    if prefix {
        if key.is_empty() {
            key = vec![0];
            end = vec![0];
        } else {
            end = prefix_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        end = vec![0];
    }
    (key, end)
}

/// etcdctl's `getGetOp`, checks in its order.
pub fn range_request(args: &[Vec<u8>], flags: &FlagSet) -> CtlResult<RangeRequest> {
    let Some(key) = args.first() else {
        return Err(CtlError::bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    if prefix && from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let consistency = flags.string("consistency");
    let serializable = match consistency.as_str() {
        "s" => true,
        "l" => false,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "unknown consistency flag {}",
                gofmt::quote(consistency.as_bytes())
            )))
        }
    };
    if args.len() > 1 && (prefix || from_key) {
        return Err(CtlError::bad_args(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        ));
    }
    let order_flag = flags.string("order");
    let mut order = match order_flag.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "bad sort order {order_flag}"
            )))
        }
    };
    let target_flag = flags.string("sort-by");
    let target = match target_flag.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "bad sort target {target_flag}"
            )))
        }
    };
    // clientv3 drops an ascending sort by key: it is the server's natural order.
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    let (key, range_end) = key_range(key.clone(), args.get(1), prefix, from_key);
    let rev = flags.int("rev");
    Ok(RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        limit: flags.int("limit"),
        revision: if rev > 0 { rev } else { 0 },
        sort_order: order as i32,
        sort_target: target as i32,
        serializable,
        keys_only: flags.bool("keys-only"),
        ..Default::default()
    })
}

/// etcdctl's `getDelOp`.
pub fn delete_request(args: &[Vec<u8>], flags: &FlagSet) -> CtlResult<DeleteRangeRequest> {
    if args.is_empty() || args.len() > 2 {
        return Err(CtlError::bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    if prefix && from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if args.len() > 1 && (prefix || from_key) {
        return Err(CtlError::bad_args(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        ));
    }
    let (key, range_end) = key_range(args[0].clone(), args.get(1), prefix, from_key);
    Ok(DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: flags.bool("prev-kv"),
    })
}

fn rpc_failed(e: crate::client::RpcError) -> CtlError {
    CtlError::error(e.to_string())
}

pub async fn put(inv: &mut Invocation<'_>) -> CtlResult {
    let req = put_request(&inv.args, &inv.flags, &mut std::io::stdin())?;
    // etcdctl starts the command timeout before it reads the environment.
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let resp = client.put(req, deadline).await.map_err(rpc_failed)?;
    printer.put(&mut std::io::stdout().lock(), &resp)
}

pub async fn get(inv: &mut Invocation<'_>) -> CtlResult {
    let req = range_request(&inv.args, &inv.flags)?;
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    let (client, mut printer) = global::must_client(&mut inv.flags).await?;
    let resp = client.range(req, deadline).await.map_err(rpc_failed)?;
    if inv.flags.bool("print-value-only") && !printer.enable_value_only() {
        return Err(CtlError::bad_args(
            "print-value-only is only for `--write-out=simple`",
        ));
    }
    printer.get(&mut std::io::stdout().lock(), &resp)
}

pub async fn del(inv: &mut Invocation<'_>) -> CtlResult {
    let req = delete_request(&inv.args, &inv.flags)?;
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    let (client, printer) = global::must_client(&mut inv.flags).await?;
    let resp = client
        .delete_range(req, deadline)
        .await
        .map_err(rpc_failed)?;
    printer.del(&mut std::io::stdout().lock(), &resp)
}

pub async fn compaction(inv: &mut Invocation<'_>) -> CtlResult {
    if inv.args.len() != 1 {
        return Err(CtlError::bad_args("compaction command needs 1 argument"));
    }
    let rev = gofmt::parse_int(&String::from_utf8_lossy(&inv.args[0]), 10)
        .map_err(|(_, e)| CtlError::error(e.to_string()))?;
    let physical = inv.flags.bool("physical");
    let (client, _printer) = global::must_client(&mut inv.flags).await?;
    // Here the client comes first, so the timeout may come from the environment.
    let deadline = deadline_after(global::command_timeout(&inv.flags));
    client
        .compact(
            CompactionRequest {
                revision: rev,
                physical,
            },
            deadline,
        )
        .await
        .map_err(rpc_failed)?;
    writeln!(std::io::stdout().lock(), "compacted revision {rev}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse::command_flags;
    use crate::cli::spec::{del_command, get_command, put_command};

    fn flags_for(cmd: &crate::cli::spec::Command, set: &[(&str, &str)]) -> FlagSet {
        let mut fs = command_flags(&[cmd]);
        for (k, v) in set {
            fs.set(k, v).unwrap();
        }
        fs
    }

    fn args(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn prefix_end_follows_clientv3() {
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
    }

    #[test]
    fn get_requests() {
        let get = get_command();
        let r = range_request(
            &args(&["foo"]),
            &flags_for(&get, &[("prefix", "true"), ("limit", "2")]),
        )
        .unwrap();
        assert_eq!(
            (&r.key[..], &r.range_end[..], r.limit),
            (&b"foo"[..], &b"fop"[..], 2)
        );
        let r = range_request(&args(&[""]), &flags_for(&get, &[("prefix", "true")])).unwrap();
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"\0"[..], &b"\0"[..]));
        let r = range_request(
            &args(&["a", "b"]),
            &flags_for(&get, &[("consistency", "s")]),
        )
        .unwrap();
        assert!(r.serializable);
        assert_eq!(&r.range_end[..], b"b");
        let r = range_request(
            &args(&["a"]),
            &flags_for(&get, &[("sort-by", "key"), ("order", "ascend")]),
        )
        .unwrap();
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::None as i32, SortTarget::Key as i32)
        );
        let r = range_request(&args(&["a"]), &flags_for(&get, &[("sort-by", "modify")])).unwrap();
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::None as i32, SortTarget::Mod as i32)
        );
    }

    #[test]
    fn get_errors_in_etcdctl_order() {
        let get = get_command();
        let err = |a: &[&str], f: &[(&str, &str)]| {
            range_request(&args(a), &flags_for(&get, f)).unwrap_err()
        };
        let e = err(&[], &[("consistency", "x")]);
        assert_eq!(
            (e.code, e.to_string().as_str()),
            (
                128,
                "get command needs one argument as key and an optional argument as range_end"
            )
        );
        let e = err(&["a"], &[("consistency", "x")]);
        assert_eq!(
            (e.code, e.to_string().as_str()),
            (4, "unknown consistency flag \"x\"")
        );
        let e = err(&["a", "b"], &[("prefix", "true")]);
        assert_eq!(e.code, 128);
        assert_eq!(
            err(&["a"], &[("order", "up")]).to_string(),
            "bad sort order up"
        );
        assert_eq!(
            err(&["a"], &[("sort-by", "size")]).to_string(),
            "bad sort target size"
        );
    }

    #[test]
    fn put_requests() {
        let put = put_command();
        let r = put_request(
            &args(&["k", "v"]),
            &flags_for(&put, &[("lease", "1a")]),
            &mut std::io::empty(),
        )
        .unwrap();
        assert_eq!(
            (&r.key[..], &r.value[..], r.lease),
            (&b"k"[..], &b"v"[..], 26)
        );
        let r = put_request(
            &args(&["k"]),
            &flags_for(&put, &[]),
            &mut &b"from stdin\n"[..],
        )
        .unwrap();
        assert_eq!(&r.value[..], b"from stdin\n");
        let e =
            put_request(&args(&["k"]), &flags_for(&put, &[]), &mut std::io::empty()).unwrap_err();
        assert_eq!(e.to_string(), PUT_USAGE_ERROR);
        let e = put_request(
            &args(&["k", "v"]),
            &flags_for(&put, &[("lease", "zz")]),
            &mut std::io::empty(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
        let e = put_request(
            &args(&["k", "v"]),
            &flags_for(&put, &[("ignore-value", "true")]),
            &mut std::io::empty(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "put command needs only 1 argument when 'ignore-value' is set"
        );
    }

    #[test]
    fn del_requests() {
        let del = del_command();
        let r = delete_request(
            &args(&["a"]),
            &flags_for(&del, &[("from-key", "true"), ("prev-kv", "true")]),
        )
        .unwrap();
        assert_eq!(
            (&r.key[..], &r.range_end[..], r.prev_kv),
            (&b"a"[..], &b"\0"[..], true)
        );
        let e = delete_request(&args(&["a", "b", "c"]), &flags_for(&del, &[])).unwrap_err();
        assert_eq!(e.code, 128);
    }
}
