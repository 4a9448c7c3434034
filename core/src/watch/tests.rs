//! The hub over a real store: synced delivery, history catch-up, slow receivers, compaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{update_queue, UpdateReceiver};
use bytes::Bytes;
use ketch_api::etcdserverpb::{DeleteRangeRequest, PutRequest};
use ketch_api::mvccpb::{event::EventType, Event};
use ketch_mvcc::Store;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    sync: Option<std::thread::JoinHandle<()>>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let hub = WatchHub::new(store.clone());
        let sync = Some(hub.start_sync_thread().unwrap());
        Fixture {
            _dir: dir,
            store,
            hub,
            sync,
        }
    }

    /// Commits the given writes as one batch and notifies the hub, as the apply thread does.
    fn batch(&self, writes: &[(&str, Option<&str>)]) {
        let mut b = self.store.write().unwrap();
        for (k, v) in writes {
            match v {
                Some(v) => {
                    b.put(&PutRequest {
                        key: Bytes::copy_from_slice(k.as_bytes()),
                        value: Bytes::copy_from_slice(v.as_bytes()),
                        ..Default::default()
                    })
                    .unwrap();
                }
                None => {
                    b.delete_range(&DeleteRangeRequest {
                        key: Bytes::copy_from_slice(k.as_bytes()),
                        ..Default::default()
                    })
                    .unwrap();
                }
            }
        }
        let rev = b.revision();
        let events = b.commit(false).unwrap();
        self.hub.notify(&events, rev);
    }

    fn put(&self, k: &str, v: &str) {
        self.batch(&[(k, Some(v))]);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.hub.stop();
        if let Some(t) = self.sync.take() {
            t.join().unwrap();
        }
    }
}

fn spec(k: &str, end: &str) -> WatchSpec {
    WatchSpec {
        range: KeyRange::from_request(k.as_bytes(), end.as_bytes()).unwrap(),
        no_put: false,
        no_delete: false,
    }
}

/// (revision, [(key, PUT|DEL, value)]) per update.
type Seen = Vec<(i64, Vec<(String, &'static str, String)>)>;

fn summary(u: &WatchUpdate) -> (i64, Vec<(String, &'static str, String)>) {
    (u.revision, u.events.iter().map(ev_summary).collect())
}

fn ev_summary(e: &Event) -> (String, &'static str, String) {
    let kv = e.kv.as_ref().unwrap();
    (
        String::from_utf8_lossy(&kv.key).into_owned(),
        if e.r#type == EventType::Put as i32 {
            "PUT"
        } else {
            "DEL"
        },
        String::from_utf8_lossy(&kv.value).into_owned(),
    )
}

/// Receives updates until `n` events arrived (bounded by 5 s).
fn collect(rx: &mut UpdateReceiver, n: usize) -> Vec<WatchUpdate> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    let mut got = 0;
    while got < n {
        match rx.try_recv() {
            Some(u) => {
                got += u.events.len().max(usize::from(u.compact_revision != 0));
                out.push(u);
            }
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            None => panic!("only {got} of {n} events arrived: {out:?}"),
        }
    }
    out
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn synced_watchers_get_each_revision_of_their_keys_in_its_own_update() {
    let f = Fixture::new();
    let (tx, mut rx) = update_queue(64, 1 << 20);
    let (_, rev) = f.hub.watch(spec("a", ""), 0, tx.clone());
    assert_eq!(rev, 1);
    f.hub.watch(spec("p/", "p0"), 0, tx.clone());
    f.batch(&[("a", Some("1")), ("b", Some("x")), ("p/1", Some("y"))]); // revs 2, 3, 4
    f.batch(&[("a", None)]); // 5
    let seen: Seen = collect(&mut rx, 3).iter().map(summary).collect();
    assert_eq!(
        seen,
        vec![
            (2, vec![(s("a"), "PUT", s("1"))]),
            (4, vec![(s("p/1"), "PUT", s("y"))]),
            (5, vec![(s("a"), "DEL", s(""))]),
        ]
    );
    assert_eq!(f.hub.notified_revision(), 5);
}

#[test]
fn a_watch_from_an_old_revision_replays_history_then_follows_live() {
    let f = Fixture::new();
    f.put("k", "1"); // 2
    f.put("other", "x"); // 3
    f.put("k", "2"); // 4
    let (tx, mut rx) = update_queue(64, 1 << 20);
    f.hub.watch(spec("k", ""), 2, tx);
    let first = collect(&mut rx, 2);
    assert_eq!(
        summary(&first[0]).1,
        vec![(s("k"), "PUT", s("1")), (s("k"), "PUT", s("2"))]
    );
    // caught up: it is synced and gets live events
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.hub.counts().unsynced > 0 {
        assert!(Instant::now() < deadline, "never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    f.put("k", "3"); // 5
    let next = collect(&mut rx, 1);
    assert_eq!(summary(&next[0]), (5, vec![(s("k"), "PUT", s("3"))]));
}

#[test]
fn a_full_queue_never_blocks_notify_and_the_watcher_catches_up_in_order() {
    let f = Fixture::new();
    let (tx, mut rx) = update_queue(2, 1 << 20);
    f.hub.watch(spec("k", ""), 0, tx);
    let started = Instant::now();
    for i in 0..50 {
        f.put("k", &i.to_string());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(f.hub.counts().unsynced == 1 || !rx.is_empty());
    let got = collect(&mut rx, 50);
    let values: Vec<String> = got
        .iter()
        .flat_map(|u| u.events.iter().map(|e| ev_summary(e).2))
        .collect();
    assert_eq!(values, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    let revs: Vec<i64> = got
        .iter()
        .flat_map(|u| u.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision))
        .collect();
    assert!(revs.windows(2).all(|w| w[0] + 1 == w[1]), "{revs:?}");
}

#[test]
fn filters_drop_events_and_an_all_filtered_revision_sends_nothing() {
    let f = Fixture::new();
    let (tx, mut rx) = update_queue(64, 1 << 20);
    let mut no_put = spec("k", "");
    no_put.no_put = true;
    f.hub.watch(no_put, 0, tx);
    f.put("k", "1");
    f.batch(&[("k", None)]);
    let got = collect(&mut rx, 1);
    assert_eq!(summary(&got[0]), (3, vec![(s("k"), "DEL", s(""))]));
    assert!(rx.try_recv().is_none());
}

#[test]
fn a_compacted_start_revision_gets_the_compact_revision_and_the_watcher_is_dropped() {
    let f = Fixture::new();
    for i in 0..5 {
        f.put("k", &i.to_string()); // 2..=6
    }
    let mut b = f.store.write().unwrap();
    b.compact(5).unwrap();
    b.commit(false).unwrap();
    let (tx, mut rx) = update_queue(64, 1 << 20);
    let (id, _) = f.hub.watch(spec("k", ""), 3, tx);
    let got = collect(&mut rx, 1);
    assert_eq!(got[0].compact_revision, 5);
    assert!(got[0].events.is_empty());
    assert!(!f.hub.cancel(id), "the hub dropped it");
}

#[test]
fn cancel_stops_delivery_and_progress_reports_synced_watchers_only() {
    let f = Fixture::new();
    let (tx, mut rx) = update_queue(64, 1 << 20);
    let (id, _) = f.hub.watch(spec("k", ""), 0, tx.clone());
    f.put("k", "1");
    f.hub.progress(id);
    let got = collect(&mut rx, 1);
    assert_eq!(got.len(), 1);
    let progress = rx.try_recv().unwrap();
    assert!(progress.events.is_empty() && progress.revision == 2);
    assert!(f.hub.cancel(id));
    f.put("k", "2");
    assert!(rx.try_recv().is_none());
    // a watcher in the future is synced and waits for its revision
    let (_, _) = f.hub.watch(spec("k", ""), 5, tx);
    f.put("k", "3"); // 4
    f.put("k", "4"); // 5
    let got = collect(&mut rx, 1);
    assert_eq!(summary(&got[0]), (5, vec![(s("k"), "PUT", s("4"))]));
}

#[test]
fn many_watchers_on_one_key_each_get_every_event_once() {
    let f = Fixture::new();
    let mut rxs = Vec::new();
    for _ in 0..20 {
        let (tx, rx) = update_queue(8, 1 << 20);
        for _ in 0..50 {
            f.hub.watch(spec("hot", ""), 0, tx.clone());
        }
        rxs.push(rx);
    }
    // queues of 8 for 50 watchers each: most fall behind and catch up from history
    let mut counts = vec![std::collections::HashMap::<u64, Vec<i64>>::new(); rxs.len()];
    for i in 0..20 {
        f.put("hot", &i.to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (rx, seen) in rxs.iter_mut().zip(counts.iter_mut()) {
            while let Some(u) = rx.try_recv() {
                let revs = seen.entry(u.watcher).or_default();
                revs.extend(u.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
            }
        }
        let done = counts
            .iter()
            .all(|m| m.len() == 50 && m.values().all(|r| r.len() == 20));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every watcher got every event"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for m in &counts {
        for revs in m.values() {
            assert_eq!(revs, &(2..22).collect::<Vec<i64>>());
        }
    }
}

/// The handoff between history reads and live notification under concurrent writes: watchers
/// start at past revisions (or now) while a writer keeps committing, with queues so small that
/// they keep falling behind; each must see every revision of its key from its start exactly
/// once, in order.
#[test]
fn catching_up_while_writes_continue_loses_and_repeats_nothing() {
    let f = Arc::new(Fixture::new());
    for i in 0..50 {
        f.put(if i % 2 == 0 { "even" } else { "odd" }, &i.to_string()); // 2..=51
    }
    let writer = {
        let f = f.clone();
        std::thread::spawn(move || {
            for i in 50..450 {
                f.put(if i % 2 == 0 { "even" } else { "odd" }, &i.to_string()); // 52..=451
            }
        })
    };
    let mut watchers = Vec::new();
    for (n, start) in [2i64, 10, 30, 0, 51, 2, 0, 40].into_iter().enumerate() {
        let (tx, rx) = update_queue(1 + n % 3, 1 << 20);
        let key = if n % 2 == 0 { "even" } else { "odd" };
        let (_, current) = f.hub.watch(spec(key, ""), start, tx);
        let first = if start == 0 { current + 1 } else { start };
        watchers.push((key, first, rx));
        std::thread::sleep(Duration::from_millis(3));
    }
    writer.join().unwrap();
    let last = 451;
    for (key, first, mut rx) in watchers {
        // revisions of `key` from `first` on: even keys were written at even revisions
        let parity = if key == "even" { 0 } else { 1 };
        let want: Vec<i64> = (first..=last).filter(|r| r % 2 == parity).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want.len() {
            match rx.try_recv() {
                Some(u) => got.extend(u.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision)),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                None => break,
            }
        }
        assert_eq!(got, want, "watcher of {key} from {first}");
    }
}

#[test]
fn the_sync_thread_ends_when_the_hub_is_dropped_without_stop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let hub = WatchHub::new(store.clone());
    let thread = hub.start_sync_thread().unwrap();
    drop(hub);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the sync thread outlived its hub"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.join().unwrap();
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "nothing holds the store any more"
    );
}
