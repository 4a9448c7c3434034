//! Watch wire rules shared by a member's Watch service and the proxy's: the texts etcd puts in
//! a refused create, and how a large response is split into fragments.

use prost::Message;

use crate::etcdserverpb::WatchResponse;

/// The watch id etcd 3.4 answers a refused create (and a progress request) with.
pub const INVALID_WATCH_ID: i64 = -1;
/// `cancel_reason` of a create whose range end is at or below its key.
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// `cancel_reason` of a create naming a watch id the stream already uses.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// etcd's `sendFragments`: a response at or above `max_bytes` with more than one event is split
/// into responses of as many events as fit (at least one each); all but the last have
/// `fragment` set.
pub fn fragments(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut template = resp.clone();
    template.events = Vec::new();
    template.fragment = true;
    let mut out = Vec::new();
    let mut cur = template.clone();
    for ev in resp.events {
        cur.events.push(ev);
        if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
            let ev = cur.events.pop().expect("just pushed");
            out.push(std::mem::replace(&mut cur, template.clone()));
            cur.events.push(ev);
        }
    }
    cur.fragment = false;
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvccpb::{Event, KeyValue};

    fn ev(i: usize, size: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: format!("k{i}").into(),
                value: vec![b'x'; size].into(),
                mod_revision: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn small_responses_and_single_events_are_not_fragmented() {
        let r = WatchResponse {
            watch_id: 3,
            events: vec![ev(0, 10), ev(1, 10)],
            ..Default::default()
        };
        assert_eq!(fragments(r.clone(), 1000), vec![r]);
        let big = WatchResponse {
            events: vec![ev(0, 5000)],
            ..Default::default()
        };
        assert_eq!(fragments(big.clone(), 1000), vec![big]);
    }

    #[test]
    fn large_responses_split_in_order_with_the_last_unmarked() {
        let events: Vec<Event> = (0..10).map(|i| ev(i, 300)).collect();
        let r = WatchResponse {
            watch_id: 7,
            events: events.clone(),
            ..Default::default()
        };
        let parts = fragments(r, 1000);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        for p in &parts[..parts.len() - 1] {
            assert!(p.fragment && p.watch_id == 7 && !p.events.is_empty());
            assert!(p.encoded_len() < 1000 || p.events.len() == 1);
        }
        assert!(!parts.last().unwrap().fragment);
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
    }
}
