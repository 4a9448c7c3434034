//! The testkit checked against real etcd: if these fail, no other result means anything.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use ketch_tests::{compare, ctl, http_get, Etcdctl, Kind, Server};

#[test]
fn etcd_server_starts_on_free_ports_and_keeps_data_across_kill9_and_sigterm() {
    let mut server = Server::start(Kind::Etcd);
    assert_ne!(server.client_port(), server.peer_port());
    let url = server.client_url();
    let ctl = server.etcdctl();
    ctl.run(&["put", "k", "v1"]).assert_success();

    server.kill9();
    assert!(!server.is_running());
    assert!(
        http_get(server.client_addr(), "/health", Duration::from_millis(500)).is_err(),
        "nothing should answer on a killed server's port"
    );
    server.restart();
    assert_eq!(server.client_url(), url, "restart keeps the ports");
    let out = ctl.run(&["get", "k", "--print-value-only"]);
    assert_eq!(out.assert_success().stdout_str(), "v1\n");

    ctl.run(&["put", "k", "v2"]).assert_success();
    let status = server.stop();
    // etcd cleans up, then re-raises SIGTERM on itself.
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "etcd's exit on SIGTERM: {status}"
    );
    server.restart();
    let out = ctl.run(&["get", "k", "--print-value-only"]);
    assert_eq!(out.assert_success().stdout_str(), "v2\n");
    assert!(server.data_dir().join("member").is_dir());
}

#[test]
fn etcdctl_runner_captures_stdout_stderr_exit_code_and_stdin() {
    let server = Server::start(Kind::Etcd);
    let ctl = server.etcdctl();
    let out = ctl.run_stdin(&["put", "from-stdin"], "line1\nline2");
    assert_eq!(out.assert_success().stdout_str(), "OK\n");
    let out = ctl.run(&["get", "from-stdin", "--print-value-only"]);
    assert_eq!(out.stdout_str(), "line1\nline2\n");
    let out = ctl.run(&["get", "a", "--rev", "100"]);
    assert_eq!(out.code, Some(1));
    out.assert_failure_contains("Error: etcdserver: mvcc: required revision is a future revision");
    let out = ctl.run(&["get", "a", "--consistency=x"]);
    assert_eq!(out.code, Some(4), "etcdctl's exit code for bad flags");
}

#[test]
fn etcdctl_against_a_closed_port_fails_within_the_bound() {
    let (port, _) = ketch_tests::server::two_free_ports();
    let out = Etcdctl::new(&format!("127.0.0.1:{port}"))
        .timeout(Duration::from_secs(20))
        .run(&["--command-timeout=1s", "get", "a"]);
    assert!(!out.success());
    assert!(
        out.stderr_str().contains("context deadline exceeded"),
        "{}",
        out.transcript()
    );
}

#[test]
fn compare_passes_on_equal_behaviour_and_normalises_ids() {
    // Under KETCH_TESTS_TARGET=etcd this compares two etcds whose ids and ports differ.
    compare(&[
        ctl(["put", "a", "1", "-w", "json"]).ok(),
        ctl(["member", "list", "-w", "table"]).ok(),
        ctl(["endpoint", "status", "-w", "fields"]).ok(),
    ]);
}

#[test]
#[should_panic(expected = "do not hold on the reference etcd")]
fn compare_rejects_a_test_whose_expectation_etcd_does_not_meet() {
    let _ = Kind::Etcd.binary();
    compare(&[ctl(["get", "missing"]).stdout("something\n")]);
}
