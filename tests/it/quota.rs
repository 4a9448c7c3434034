//! The space quota and alarms: over `--quota-backend-bytes` a member raises NOSPACE, growing
//! writes fail with etcd's error while reads, deletes and compaction work, `etcdctl alarm
//! list` shows it, and `etcdctl alarm disarm` lifts it once there is room.

use ketch_tests::{Kind, Server};

#[test]
fn over_the_quota_writes_fail_until_room_is_made_and_the_alarm_disarmed() {
    let s = Server::builder(Kind::Ketch)
        .arg("--quota-backend-bytes=300000")
        .start();
    let ctl = s.etcdctl();
    let big = "x".repeat(100_000);
    let mut refused = None;
    for i in 0..10 {
        let out = ctl.run_stdin(&["put", &format!("big{i}")], big.as_bytes());
        if !out.success() {
            refused = Some(out);
            break;
        }
    }
    let refused = refused.expect("the quota was never hit");
    assert!(
        refused
            .stderr_str()
            .contains("Error: etcdserver: mvcc: database space exceeded"),
        "{}",
        refused.transcript()
    );
    let list = ctl.run(&["alarm", "list"]);
    list.assert_success();
    assert!(
        list.stdout_str().starts_with("memberID:") && list.stdout_str().contains(" alarm:NOSPACE"),
        "{}",
        list.transcript()
    );
    // small writes too, and txns that write; reads and txns that only read still work
    assert!(ctl
        .run(&["put", "small", "1"])
        .stderr_str()
        .contains("database space exceeded"));
    assert!(ctl
        .run_stdin(&["txn"], "\n\nput t 1\n\n")
        .stderr_str()
        .contains("database space exceeded"));
    assert!(ctl
        .run(&["get", "big", "--prefix", "--keys-only"])
        .stdout_str()
        .starts_with("big0"));
    assert!(ctl.run_stdin(&["txn"], "\n\nget big0\n\n").success());
    assert!(ctl
        .run(&["lease", "grant", "10"])
        .stderr_str()
        .contains("database space exceeded"));
    // make room, then disarm
    ctl.run(&["del", "big", "--prefix"]).assert_success();
    let disarm = ctl.run(&["alarm", "disarm"]);
    disarm.assert_success();
    assert!(
        disarm.stdout_str().contains(" alarm:NOSPACE"),
        "{}",
        disarm.transcript()
    );
    assert_eq!(ctl.run(&["alarm", "list"]).stdout_str(), "");
    ctl.run(&["put", "small", "1"]).assert_success();
    // the alarm survives a restart
    for i in 0..10 {
        if !ctl
            .run_stdin(&["put", &format!("again{i}")], big.as_bytes())
            .success()
        {
            break;
        }
    }
    let mut s = s;
    s.stop();
    // a raised alarm makes /health false (as in etcd), so wait for the member to answer instead
    s.restart_unwaited();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let list = loop {
        let list = s.etcdctl().run(&["alarm", "list", "--dial-timeout=2s"]);
        if list.success() || std::time::Instant::now() >= deadline {
            break list;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        list.stdout_str().contains("alarm:NOSPACE"),
        "{}",
        list.transcript()
    );
    let health = ketch_tests::http_get(
        s.client_addr(),
        "/health",
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        (health.status, health.body_str().trim()),
        (503, r#"{"health":"false"}"#),
        "a raised alarm is unhealthy"
    );
}
