//! Memory of large answers (ketch only): a Range holds its answer at most once. The server's
//! peak RSS while answering a range over N MiB of values may grow by about N MiB (the encoded
//! response on its way out), not by the two or more copies a naive server makes.

use ketch_api::etcdserverpb::{PutRequest, RangeRequest};
use ketch_tests::grpc::{block_on, kv_client};
use ketch_tests::{Kind, Server};

const VALUES: usize = 64;
const VALUE_BYTES: usize = 1 << 20;

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_large_range_is_held_once() {
    if ketch_tests::ketch_is_substituted() {
        return; // measures ketch's own memory
    }
    let mut server = Server::start(Kind::Ketch);
    block_on(async {
        let mut kv = kv_client(&server).await;
        for i in 0..VALUES {
            let value: Vec<u8> = (0..VALUE_BYTES).map(|b| (b * 31 + i) as u8).collect();
            kv.put(PutRequest {
                key: format!("big/{i:03}").into_bytes().into(),
                value: value.into(),
                ..Default::default()
            })
            .await
            .expect("put 1 MiB");
        }
    });
    // a fresh process: its high-water mark is start-up alone until the range
    server.restart();
    let pid = server.pid().expect("running");
    let before = status_kb(pid, "VmRSS:");
    let received = block_on(async {
        let mut kv = kv_client(&server)
            .await
            .max_decoding_message_size(usize::MAX);
        let resp = kv
            .range(RangeRequest {
                key: b"big/".to_vec().into(),
                range_end: b"big0".to_vec().into(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(resp.count, VALUES as i64);
        for (i, kv) in resp.kvs.iter().enumerate() {
            assert_eq!(kv.value.len(), VALUE_BYTES);
            assert_eq!(kv.value[1], (31 + i) as u8, "value of key {i}");
        }
        resp.kvs.len()
    });
    assert_eq!(received, VALUES);
    let peak = status_kb(pid, "VmHWM:");
    let data_kb = (VALUES * VALUE_BYTES / 1024) as u64;
    let growth = peak.saturating_sub(before);
    eprintln!(
        "rss before {before} kB, peak {peak} kB, growth {growth} kB for {data_kb} kB of values"
    );
    assert!(
        growth < data_kb * 3 / 2,
        "answering a range over {data_kb} kB of values raised peak RSS by {growth} kB (before {before} kB, peak {peak} kB)"
    );
}
