//! Request validation limits: request size, txn operation count, duplicate keys in a txn.

use ketch_tests::{compare, ctl, txn_input};

/// etcd's `--max-request-bytes` default: 1.5 MiB.
const MAX_REQUEST_BYTES: usize = 1536 * 1024;

#[test]
fn put_over_the_request_size_limit_is_rejected() {
    let too_large = vec![b'x'; MAX_REQUEST_BYTES + 1024];
    compare(&[
        ctl(["put", "big"])
            .stdin(too_large)
            .fails_with("etcdserver: request is too large"),
        ctl(["get", "big", "-w", "json"]).ok(),
        ctl(["put", "small", "1", "-w", "json"]).ok(),
    ]);
}

#[test]
fn put_just_under_the_request_size_limit_is_accepted() {
    let fits = vec![b'y'; MAX_REQUEST_BYTES - 1024];
    compare(&[
        ctl(["put", "big"]).stdin(fits).ok(),
        ctl(["get", "big", "--keys-only", "-w", "json"]).ok(),
        ctl(["get", "big", "-w", "fields", "--keys-only"]).ok(),
    ]);
}

#[test]
fn txn_over_the_request_size_limit_is_rejected() {
    let value = "z".repeat(400 * 1024);
    // 4 x 400 KiB: over etcd's 1.5 MiB, under the 2 MiB gRPC message limit of the client.
    let puts: Vec<String> = (0..4).map(|i| format!("put t{i} {value}")).collect();
    let refs: Vec<&str> = puts.iter().map(String::as_str).collect();
    compare(&[
        ctl(["txn"])
            .stdin(txn_input(&[], &refs, &[]))
            .fails_with("etcdserver: request is too large"),
        ctl(["get", "t", "--prefix", "--keys-only", "-w", "json"]).ok(),
    ]);
}

#[test]
fn txn_operation_count_limit_is_per_branch_and_128() {
    let ops: Vec<String> = (0..129).map(|i| format!("get g{i}")).collect();
    let refs: Vec<&str> = ops.iter().map(String::as_str).collect();
    let cmps: Vec<String> = (0..129)
        .map(|i| format!("version(\"c{i}\") = \"0\""))
        .collect();
    let cmp_refs: Vec<&str> = cmps.iter().map(String::as_str).collect();
    compare(&[
        ctl(["txn"])
            .stdin(txn_input(&[], &refs, &[]))
            .fails_with("etcdserver: too many operations in txn request"),
        ctl(["txn"])
            .stdin(txn_input(&[], &[], &refs))
            .fails_with("too many operations"),
        ctl(["txn"])
            .stdin(txn_input(&cmp_refs, &[], &[]))
            .fails_with("too many operations"),
        ctl(["txn"])
            .stdin(txn_input(&cmp_refs[..128], &refs[..128], &refs[1..129]))
            .ok(),
    ]);
}

#[test]
fn duplicate_keys_in_one_txn_branch_are_rejected() {
    compare(&[
        ctl(["txn"])
            .stdin(txn_input(&[], &["put d 1", "put d 2"], &[]))
            .fails_with("etcdserver: duplicate key given in txn request"),
        ctl(["txn"])
            .stdin(txn_input(&[], &[], &["put e 1", "put e 2"]))
            .fails_with("duplicate key given in txn request"),
        ctl(["txn"])
            .stdin(txn_input(&[], &["del f --prefix", "put f1 x"], &[]))
            .fails_with("duplicate key given in txn request"),
        ctl(["get", "", "--prefix", "--keys-only", "-w", "json"]).ok(),
    ]);
}
