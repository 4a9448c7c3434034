//! Every output format (`-w simple|json|fields|table`) of the KV commands and of `member list`,
//! `endpoint status` and `endpoint health`, compared with etcd after normalisation.

use ketch_tests::{compare, ctl, Step};

const FORMATS: [&str; 4] = ["simple", "json", "fields", "table"];

fn each_format(args: &[&str]) -> Vec<Step> {
    FORMATS
        .iter()
        .map(|f| {
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            a.push(format!("--write-out={f}"));
            ctl(a)
        })
        .collect()
}

#[test]
fn kv_commands_in_every_format() {
    let mut steps = vec![ctl(["put", "a", "1"]).ok()];
    // put, get, del: table is not supported for them; etcdctl says so.
    steps.extend(each_format(&["put", "k", "v", "--prev-kv"]));
    steps.extend(each_format(&["get", "k"]));
    steps.extend(each_format(&["get", "", "--prefix"]));
    steps.extend(each_format(&["get", "nothing"]));
    steps.extend(each_format(&["get", "", "--prefix", "--keys-only"]));
    steps.extend(each_format(&["del", "a", "--prev-kv"]));
    steps.extend(each_format(&["del", "nothing"]));
    steps.extend(each_format(&["compact", "2"]));
    compare(&steps);
}

#[test]
fn txn_in_every_format() {
    let mut steps = vec![ctl(["put", "a", "1"]).ok()];
    for step in each_format(&["txn"]) {
        steps.push(step.stdin("value(\"a\") = \"1\"\n\nget a\nput b 2\n\ndel a\n\n"));
    }
    for step in each_format(&["txn"]) {
        steps.push(step.stdin("value(\"a\") = \"9\"\n\nget a\n\ndel a --prev-kv\nget a\n\n"));
    }
    compare(&steps);
}

#[test]
fn member_list_in_every_format() {
    let mut steps = each_format(&["member", "list"]);
    steps.push(ctl(["member", "list"]).ok());
    steps.push(ctl(["member", "list", "--hex", "-w", "json"]).ok());
    compare(&steps);
}

#[test]
fn endpoint_status_in_every_format() {
    let mut steps = vec![ctl(["put", "a", "1"]).ok()];
    steps.extend(each_format(&["endpoint", "status"]));
    steps.push(ctl(["endpoint", "status"]).ok());
    compare(&steps);
}

#[test]
fn endpoint_health_in_every_format() {
    let mut steps = each_format(&["endpoint", "health"]);
    steps.push(
        ctl(["endpoint", "health"])
            .ok()
            .stderr_contains("is healthy"),
    );
    compare(&steps);
}

#[test]
fn etcdctl_version_is_the_reference_client() {
    compare(&[
        ctl(["version"])
            .ok()
            .stdout("etcdctl version: 3.4.23\nAPI version: 3.4\n"),
        ctl(["version", "-w", "json"]).ok(),
    ]);
}

#[test]
fn unknown_output_format_is_an_error() {
    compare(&[
        ctl(["get", "a", "-w", "yaml"]).fails(),
        ctl(["put", "a", "1", "-w", "yaml"]).fails(),
        ctl(["get", "a", "-w", "json"]).ok(),
    ]);
}
