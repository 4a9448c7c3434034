//! `etcdctl get`: ranges, prefixes, limits, revisions, sorting and output flags.

use ketch_tests::{compare, ctl, Step};

/// Keys whose key order, creation order, modification order, value order and version order all
/// differ, so each sort target gives a distinguishable result.
fn seed() -> Vec<Step> {
    vec![
        ctl(["put", "k2", "c"]).ok(),
        ctl(["put", "k1", "b"]).ok(),
        ctl(["put", "k3", "a"]).ok(),
        ctl(["put", "k2", "d"]).ok(),
        ctl(["put", "k2", "e"]).ok(),
        ctl(["put", "k1", "f"]).ok(),
        ctl(["put", "j", "z"]).ok(),
        ctl(["put", "l", "y"]).ok(),
        ctl(["put", "k", "x"]).ok(),
    ]
}

fn with_seed(steps: impl IntoIterator<Item = Step>) -> Vec<Step> {
    let mut all = seed();
    all.extend(steps);
    all
}

#[test]
fn get_single_key_and_missing_key() {
    compare(&with_seed([
        ctl(["get", "k1"]).ok().stdout("k1\nf\n"),
        ctl(["get", "missing"]).ok().stdout(""),
        ctl(["get", "missing", "-w", "json"]).ok(),
        ctl(["get", "k1", "-w", "json"]).ok(),
    ]));
}

#[test]
fn get_prefix() {
    compare(&with_seed([
        ctl(["get", "k", "--prefix"]).ok(),
        ctl(["get", "k", "--prefix", "-w", "json"]).ok(),
        ctl(["get", "k2", "--prefix"]).ok(),
        ctl(["get", "nothing", "--prefix"]).ok().stdout(""),
        ctl(["get", "", "--prefix", "--keys-only"]).ok(),
    ]));
}

#[test]
fn get_from_key() {
    compare(&with_seed([
        ctl(["get", "k1", "--from-key"]).ok(),
        ctl(["get", "k3", "--from-key", "-w", "json"]).ok(),
        ctl(["get", "zzz", "--from-key"]).ok().stdout(""),
        ctl(["get", "", "--from-key", "--keys-only"]).ok(),
    ]));
}

#[test]
fn get_range_is_half_open() {
    compare(&with_seed([
        ctl(["get", "k1", "k3"]).ok().stdout("k1\nf\nk2\ne\n"),
        ctl(["get", "k", "l"]).ok(),
        ctl(["get", "j", "k", "-w", "json"]).ok(),
        ctl(["get", "k3", "k1"]).ok().stdout(""),
        ctl(["get", "k1", "k1"]).ok(),
    ]));
}

#[test]
fn get_limit_reports_more_and_the_full_count() {
    compare(&with_seed([
        ctl(["get", "", "--prefix", "--limit", "2"]).ok(),
        ctl(["get", "", "--prefix", "--limit=2", "-w", "json"])
            .ok()
            .stdout_contains("\"more\":true"),
        ctl(["get", "k", "--prefix", "--limit", "4", "-w", "json"]).ok(),
        ctl(["get", "k", "--prefix", "--limit", "10", "-w", "fields"]).ok(),
        ctl(["get", "k", "--prefix", "--limit", "0"]).ok(),
    ]));
}

#[test]
fn get_at_old_revisions_sees_history() {
    compare(&with_seed([
        ctl(["get", "k2", "--rev", "1"]).ok().stdout(""),
        ctl(["get", "k2", "--rev", "2"]).ok().stdout("k2\nc\n"),
        ctl(["get", "k2", "--rev=5", "-w", "json"]).ok(),
        ctl(["get", "k", "--prefix", "--rev", "4"]).ok(),
        ctl(["get", "k", "--prefix", "--rev", "4", "-w", "json"]).ok(),
        ctl(["get", "k1", "--rev", "10"]).ok(),
        ctl(["del", "k1"]).ok(),
        ctl(["get", "k1", "--rev", "10"]).ok(),
        ctl(["get", "k1", "--rev", "11"]).ok().stdout(""),
        ctl(["get", "k1", "--rev", "0"]).ok().stdout(""),
    ]));
}

#[test]
fn get_at_a_future_revision_is_an_error() {
    compare(&with_seed([
        ctl(["get", "k1", "--rev", "11"])
            .fails_with("Error: etcdserver: mvcc: required revision is a future revision"),
        ctl(["get", "k1", "--rev", "1000000", "-w", "json"]).fails(),
        ctl(["get", "k1", "--rev", "10"]).ok(),
    ]));
}

#[test]
fn get_sort_by_every_target_in_both_orders() {
    let mut steps = seed();
    for target in ["KEY", "CREATE", "MODIFY", "VALUE", "VERSION"] {
        for order in ["ASCEND", "DESCEND"] {
            steps.push(ctl(["get", "", "--prefix", "--sort-by", target, "--order", order]).ok());
        }
        steps.push(ctl(["get", "k", "--prefix", "--sort-by", target]).ok());
        steps.push(ctl(["get", "k", "--prefix", "--sort-by", target, "--limit", "2"]).ok());
    }
    steps.push(ctl(["get", "", "--prefix", "--order", "DESCEND"]).ok());
    steps.push(ctl(["get", "", "--prefix", "--order", "DESCEND", "--limit", "3"]).ok());
    steps.push(ctl(["get", "", "--prefix", "--sort-by", "VALUE", "-w", "json"]).ok());
    steps.push(ctl(["get", "", "--prefix", "--sort-by", "NOPE"]).fails());
    steps.push(ctl(["get", "", "--prefix", "--order", "SIDEWAYS"]).fails());
    compare(&steps);
}

#[test]
fn get_keys_only_and_print_value_only() {
    compare(&with_seed([
        ctl(["get", "k", "--prefix", "--keys-only"])
            .ok()
            .stdout("k\n\nk1\n\nk2\n\nk3\n\n"),
        ctl(["get", "k", "--prefix", "--keys-only", "-w", "json"]).ok(),
        ctl(["get", "k", "--prefix", "--keys-only", "-w", "fields"]).ok(),
        ctl(["get", "k", "--prefix", "--print-value-only"])
            .ok()
            .stdout("x\nf\ne\na\n"),
        ctl(["get", "k", "--prefix", "--print-value-only", "-w", "json"])
            .fails_with("print-value-only is only for `--write-out=simple`"),
        ctl(["get", "k1", "--keys-only", "--print-value-only"]).ok(),
        ctl([
            "get",
            "k",
            "--prefix",
            "--keys-only",
            "--limit",
            "2",
            "--rev",
            "5",
        ])
        .ok(),
    ]));
}

/// etcdctl 3.4.23 has no `--count-only` (it came in 3.5); it rejects the flag. The server
/// side of `count_only` is compared over gRPC in `count_only_range_over_grpc`.
#[test]
fn get_count_only_is_not_an_etcdctl_3_4_flag() {
    compare(&with_seed([
        ctl(["get", "k", "--prefix", "--count-only"]).fails()
    ]));
}

#[test]
fn count_only_range_over_grpc() {
    use ketch_api::etcdserverpb::RangeRequest;
    use ketch_tests::grpc::{block_on, kv_client, outcome};
    use ketch_tests::{run_script, Kind, Server};

    let servers = Server::start_all(vec![
        Server::builder(Kind::Ketch),
        Server::builder(Kind::Etcd),
    ]);
    let mut results = Vec::new();
    for server in &servers {
        for out in run_script(server, &seed()) {
            out.assert_success();
        }
        results.push(block_on(async {
            let mut kv = kv_client(server).await;
            let mut seen = Vec::new();
            for (key, end, limit, rev) in [
                ("k", "l", 0, 0),
                ("k", "l", 2, 0),
                ("", "\0", 0, 0),
                ("\0", "\0", 0, 0),
                ("k", "l", 0, 4),
                ("k1", "", 0, 0),
                ("missing", "", 0, 0),
            ] {
                let result = kv
                    .range(RangeRequest {
                        key: key.as_bytes().to_vec().into(),
                        range_end: end.as_bytes().to_vec().into(),
                        limit,
                        revision: rev,
                        count_only: true,
                        ..Default::default()
                    })
                    .await;
                let what = match &result {
                    Ok(resp) => {
                        let resp = resp.get_ref();
                        format!(
                            "count {} more {} kvs {} revision {}",
                            resp.count,
                            resp.more,
                            resp.kvs.len(),
                            resp.header.as_ref().map_or(-1, |h| h.revision)
                        )
                    }
                    Err(_) => outcome(&result),
                };
                seen.push(format!(
                    "range [{key:?}, {end:?}) limit {limit} rev {rev}: {what}"
                ));
            }
            seen
        }));
    }
    assert_eq!(
        results[0], results[1],
        "count_only ranges: ketch (left) vs etcd (right)"
    );
}

#[test]
fn get_serializable_and_linearizable_agree_on_one_member() {
    compare(&with_seed([
        ctl(["get", "k", "--prefix", "--consistency=s"]).ok(),
        ctl(["get", "k", "--prefix", "--consistency=l"]).ok(),
        ctl(["get", "k1", "--consistency", "s", "-w", "json"]).ok(),
        ctl(["get", "k1", "--consistency=x"]).fails_with("unknown consistency flag"),
    ]));
}

#[test]
fn get_with_an_empty_key_is_rejected() {
    compare(&with_seed([
        ctl(["get", ""]).fails_with("etcdserver: key is not provided"),
        ctl(["get", "", "k2"]).fails(),
        ctl(["get"]).fails(),
    ]));
}
