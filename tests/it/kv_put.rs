//! `etcdctl put` and its flags, compared with etcd.

use ketch_tests::{compare, ctl};

#[test]
fn put_prints_ok_and_each_put_is_a_new_revision() {
    compare(&[
        ctl(["put", "a", "1"]).ok().stdout("OK\n"),
        ctl(["put", "a", "2", "-w", "json"]).ok(),
        ctl(["put", "b", "1", "-w", "json"]).ok(),
        ctl(["get", "a", "-w", "json"]).ok(),
        ctl(["get", "b", "-w", "json"]).ok(),
    ]);
}

#[test]
fn put_prev_kv_prints_the_previous_pair_only_when_there_is_one() {
    compare(&[
        ctl(["put", "a", "1", "--prev-kv"]).ok().stdout("OK\n"),
        ctl(["put", "a", "2", "--prev-kv"])
            .ok()
            .stdout("OK\na\n1\n"),
        ctl(["put", "a", "3", "--prev-kv", "-w", "json"]).ok(),
        ctl(["put", "a", "4", "--prev-kv", "-w", "fields"]).ok(),
        ctl(["put", "fresh", "x", "--prev-kv", "-w", "json"]).ok(),
    ]);
}

#[test]
fn put_ignore_value_keeps_the_value_and_needs_an_existing_key() {
    compare(&[
        ctl(["put", "a", "1"]).ok(),
        ctl(["put", "a", "--ignore-value"]).ok(),
        ctl(["get", "a", "-w", "json"])
            .ok()
            .stdout_contains("\"version\":2"),
        ctl(["put", "a", "--ignore-value", "--prev-kv"]).ok(),
        ctl(["put", "missing", "--ignore-value"]).fails_with("etcdserver: key not found"),
        ctl(["put", "a", "new", "--ignore-value"]).fails_with("needs only 1 argument"),
        ctl(["get", "a", "-w", "json"]).ok(),
    ]);
}

#[test]
fn put_ignore_lease_keeps_the_value_lease_and_needs_an_existing_key() {
    compare(&[
        ctl(["put", "a", "1"]).ok(),
        ctl(["put", "a", "2", "--ignore-lease"]).ok(),
        ctl(["get", "a", "-w", "json"]).ok(),
        ctl(["put", "missing", "v", "--ignore-lease"]).fails_with("etcdserver: key not found"),
        ctl(["put", "a", "--ignore-lease", "--ignore-value"]).ok(),
        ctl(["get", "a", "-w", "fields"]).ok(),
    ]);
}

#[test]
fn put_values_with_spaces_newlines_and_unicode_round_trip() {
    compare(&[
        ctl(["put", "key with spaces", "value with  spaces "]).ok(),
        ctl(["put", "nl", "line1\nline2\n"]).ok(),
        ctl(["put", "tab", "a\tb"]).ok(),
        ctl(["put", "uni", "ключ ✓ 鍵"]).ok(),
        ctl(["put", "✓", "unicode key"]).ok(),
        ctl(["put", "empty-value", ""]).ok(),
        ctl(["get", "", "--from-key"]).ok(),
        ctl(["get", "", "--from-key", "--hex"]).ok(),
        ctl(["get", "", "--from-key", "-w", "json"]).ok(),
        ctl(["get", "", "--from-key", "-w", "fields"]).ok(),
        ctl(["get", "key with spaces", "--print-value-only"])
            .ok()
            .stdout("value with  spaces \n"),
    ]);
}

#[test]
fn put_binary_value_from_stdin_is_byte_exact() {
    let binary: Vec<u8> = (0u8..=255).chain([0, 0, b'\n', 0xff]).collect();
    compare(&[
        ctl(["put", "bin"]).stdin(binary.clone()).ok(),
        ctl(["get", "bin", "--hex"]).ok(),
        ctl(["get", "bin", "-w", "json"]).ok(),
        ctl(["get", "bin", "--print-value-only"]).ok(),
        ctl(["put", "stdin-text"]).stdin("from stdin\n").ok(),
        ctl(["get", "stdin-text", "--hex", "--print-value-only"]).ok(),
    ]);
}

#[test]
fn put_with_an_empty_key_is_rejected() {
    compare(&[
        ctl(["put", "", "v"]).fails_with("etcdserver: key is not provided"),
        ctl(["put", "", "v", "-w", "json"]).fails(),
        ctl(["put", "a", "1", "-w", "json"]).ok(),
    ]);
}

#[test]
fn put_argument_count_is_checked_by_etcdctl() {
    compare(&[
        ctl(["put"]).fails(),
        ctl(["put", "a", "b", "c"]),
        ctl(["get", "", "--prefix", "-w", "json"]).ok(),
    ]);
}

/// etcdctl refuses a value with `--ignore-value` itself; the server's own check is compared
/// over gRPC.
#[test]
fn put_with_ignore_value_and_a_value_over_grpc_is_rejected_like_etcd() {
    use ketch_api::etcdserverpb::PutRequest;
    use ketch_tests::grpc::{block_on, kv_client, outcome};
    use ketch_tests::{Kind, Server};

    let servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let results: Vec<Vec<String>> = servers
        .iter()
        .map(|server| {
            block_on(async {
                let mut kv = kv_client(server).await;
                let put =
                    |key: &str, value: &str, ignore_value: bool, ignore_lease: bool| PutRequest {
                        key: key.as_bytes().to_vec().into(),
                        value: value.as_bytes().to_vec().into(),
                        ignore_value,
                        ignore_lease,
                        ..Default::default()
                    };
                vec![
                    outcome(&kv.put(put("a", "1", false, false)).await),
                    outcome(&kv.put(put("a", "2", true, false)).await),
                    outcome(&kv.put(put("missing", "", true, false)).await),
                    outcome(&kv.put(put("", "v", false, false)).await),
                    outcome(&kv.put(put("missing", "v", false, true)).await),
                ]
            })
        })
        .collect();
    assert_eq!(
        results[1][1], "InvalidArgument: etcdserver: value is provided",
        "etcd's answer to ignore_value with a value"
    );
    assert_eq!(
        results[0], results[1],
        "put outcomes: ketch (left) vs etcd (right)"
    );
}
