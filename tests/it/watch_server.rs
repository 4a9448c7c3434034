//! Watch behaviour of a ketch member that etcd shares but where timing, not output, is the
//! point: a client that stops reading never holds up writes or other watchers, open watch
//! streams do not hold up a shutdown, and history replays after a restart.

use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::{PutRequest, WatchCreateRequest};
use ketch_tests::grpc::{kv_client, stream_channel, WatchSession};
use ketch_tests::{BackgroundCtl, Kind, Server};

fn prefix_watch(prefix: &str) -> WatchCreateRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchCreateRequest {
        key: prefix.as_bytes().to_vec().into(),
        range_end: end.into(),
        ..Default::default()
    }
}

/// Reads responses until `n` events have come (bounded); returns their mod revisions.
async fn events(w: &mut WatchSession, n: usize, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    let mut revs = Vec::new();
    while revs.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(r) = w.next(left).await else {
            panic!("only {} of {n} events within {within:?}", revs.len());
        };
        revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    revs
}

#[test]
fn a_client_that_stops_reading_holds_up_neither_writes_nor_other_watchers() {
    const PUTS: usize = 2000;
    let server = Server::start(Kind::Ketch);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // separate connections: the stalled one's flow control must not touch the other
        let mut slow = WatchSession::open(stream_channel(&server).await).await;
        let mut fast = WatchSession::open(stream_channel(&server).await).await;
        slow.create(prefix_watch("slow/")).await;
        fast.create(prefix_watch("slow/")).await;
        assert!(slow.expect_next(Duration::from_secs(10)).await.created);
        assert!(fast.expect_next(Duration::from_secs(10)).await.created);

        // 2000 puts of 20 KB: ~40 MB, far more than the stalled stream's queue and windows
        let writer = {
            let mut kv = kv_client(&server).await;
            tokio::spawn(async move {
                let value = vec![b'v'; 20 * 1024];
                let started = Instant::now();
                let mut revs = Vec::new();
                for i in 0..PUTS {
                    let r = kv
                        .put(PutRequest {
                            key: format!("slow/{:05}", i).into_bytes().into(),
                            value: value.clone().into(),
                            ..Default::default()
                        })
                        .await
                        .expect("put");
                    revs.push(r.into_inner().header.unwrap().revision);
                }
                (revs, started.elapsed())
            })
        };
        let fast_revs = events(&mut fast, PUTS, Duration::from_secs(120)).await;
        let (put_revs, took) = writer.await.unwrap();
        assert_eq!(
            fast_revs, put_revs,
            "the reading watcher gets every event in order"
        );
        println!("{PUTS} puts of 20 KB with a stalled watcher took {took:?}");

        // the stalled client now reads: everything, in order, caught up from the history
        let slow_revs = events(&mut slow, PUTS, Duration::from_secs(120)).await;
        assert_eq!(
            slow_revs, put_revs,
            "the stalled watcher catches up exactly"
        );
        let mut kv = kv_client(&server).await;
        kv.put(PutRequest {
            key: "slow/after".into(),
            value: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let after = events(&mut slow, 1, Duration::from_secs(10)).await;
        assert_eq!(
            after,
            vec![put_revs.last().unwrap() + 1],
            "and follows live again"
        );
    });
}

#[test]
fn open_watch_streams_do_not_hold_up_a_shutdown() {
    let mut server = Server::start(Kind::Ketch);
    let mut watchers: Vec<BackgroundCtl> = (0..3)
        .map(|i| {
            BackgroundCtl::spawn(
                &server.endpoint(),
                &["watch", "--prefix", &format!("k{i}")],
                &[],
            )
        })
        .collect();
    // wait until every watch is established: its probe shows up
    for (i, w) in watchers.iter_mut().enumerate() {
        let key = format!("k{i}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !w.stdout_str().contains("probe") {
            assert!(Instant::now() < deadline, "watch {i} never started");
            server
                .etcdctl()
                .run(&["put", &key, "probe"])
                .assert_success();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    for w in watchers {
        let out = w.wait_exit(Duration::from_secs(15));
        assert!(
            !out.success(),
            "etcdctl watch ends with an error when the server goes"
        );
    }
}

#[test]
fn watch_history_replays_after_a_restart() {
    let mut server = Server::start(Kind::Ketch);
    let ctl = server.etcdctl();
    ctl.run(&["put", "h", "1"]).assert_success(); // 2
    ctl.run(&["put", "h", "2"]).assert_success(); // 3
    ctl.run(&["del", "h"]).assert_success(); // 4
    server.restart();
    let w = BackgroundCtl::spawn(
        &server.endpoint(),
        &["watch", "h", "--rev", "2", "--prev-kv"],
        &[],
    );
    w.wait_stdout(Duration::from_secs(15), |o| o.contains("DELETE"));
    server.etcdctl().run(&["put", "h", "3"]).assert_success(); // 5
    w.wait_stdout(Duration::from_secs(15), |o| o.ends_with("h\n3\n"));
    assert_eq!(
        w.kill().stdout_str(),
        "PUT\nh\n1\nPUT\nh\n1\nh\n2\nDELETE\nh\n2\nh\n\nPUT\nh\n3\n"
    );
}
