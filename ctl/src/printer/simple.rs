//! `-w simple`, the default: keys and values on their own lines, `OK` for a put, the count of
//! deleted keys, comma-separated rows for member and endpoint listings.

use std::io::Write;

use ketch_api::etcdserverpb::response_op::Response;
use ketch_api::etcdserverpb::{
    DeleteRangeResponse, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberListResponse, PutResponse, RangeResponse,
    TxnResponse, WatchResponse,
};
use ketch_api::mvccpb::KeyValue;

use super::{EpHashKv, EpHealth, EpStatus, Printer};
use crate::error::CtlResult;
use crate::gofmt;

pub struct SimplePrinter {
    hex: bool,
    value_only: bool,
}

impl SimplePrinter {
    pub fn new(hex: bool) -> Self {
        SimplePrinter {
            hex,
            value_only: false,
        }
    }

    /// etcdctl's `printKV`: the key line (unless values only), then the value line.
    fn kv(&self, out: &mut dyn Write, kv: &KeyValue) -> CtlResult {
        let (key, value) = if self.hex {
            (
                gofmt::hex_escaped(&kv.key).into_bytes(),
                gofmt::hex_escaped(&kv.value).into_bytes(),
            )
        } else {
            (kv.key.to_vec(), kv.value.to_vec())
        };
        if !self.value_only {
            out.write_all(&key)?;
            out.write_all(b"\n")?;
        }
        out.write_all(&value)?;
        out.write_all(b"\n")?;
        Ok(())
    }
}

fn rows(out: &mut dyn Write, rows: &[Vec<String>]) -> CtlResult {
    for row in rows {
        writeln!(out, "{}", row.join(", "))?;
    }
    Ok(())
}

impl Printer for SimplePrinter {
    fn format_name(&self) -> &'static str {
        "simple"
    }

    fn enable_value_only(&mut self) -> bool {
        self.value_only = true;
        true
    }

    fn is_simple(&self) -> bool {
        true
    }

    fn watch(&self, out: &mut dyn Write, r: &WatchResponse) -> CtlResult {
        for ev in &r.events {
            writeln!(out, "{}", super::event_type_name(ev.r#type))?;
            if let Some(prev) = &ev.prev_kv {
                self.kv(out, prev)?;
            }
            self.kv(out, &ev.kv.clone().unwrap_or_default())?;
        }
        Ok(())
    }

    fn grant(&self, out: &mut dyn Write, r: &LeaseGrantResponse) -> CtlResult {
        writeln!(out, "lease {:016x} granted with TTL({}s)", r.id, r.ttl)?;
        Ok(())
    }

    fn revoke(&self, out: &mut dyn Write, id: i64, _r: &LeaseRevokeResponse) -> CtlResult {
        writeln!(out, "lease {id:016x} revoked")?;
        Ok(())
    }

    fn keep_alive(&self, out: &mut dyn Write, r: &LeaseKeepAliveResponse) -> CtlResult {
        writeln!(out, "lease {:016x} keepalived with TTL({})", r.id, r.ttl)?;
        Ok(())
    }

    fn time_to_live(
        &self,
        out: &mut dyn Write,
        r: &LeaseTimeToLiveResponse,
        keys: bool,
    ) -> CtlResult {
        if r.granted_ttl == 0 && r.ttl == -1 {
            writeln!(out, "lease {:016x} already expired", r.id)?;
            return Ok(());
        }
        let mut line = format!(
            "lease {:016x} granted with TTL({}s), remaining({}s)",
            r.id, r.granted_ttl, r.ttl
        )
        .into_bytes();
        if keys {
            // Go's `%v` of a []string: `[a b]`.
            line.extend_from_slice(b", attached keys([");
            for (i, k) in r.keys.iter().enumerate() {
                if i > 0 {
                    line.push(b' ');
                }
                line.extend_from_slice(k);
            }
            line.extend_from_slice(b"])");
        }
        line.push(b'\n');
        out.write_all(&line)?;
        Ok(())
    }

    fn leases(&self, out: &mut dyn Write, r: &LeaseLeasesResponse) -> CtlResult {
        writeln!(out, "found {} leases", r.leases.len())?;
        for l in &r.leases {
            writeln!(out, "{:016x}", l.id)?;
        }
        Ok(())
    }

    fn put(&self, out: &mut dyn Write, r: &PutResponse) -> CtlResult {
        writeln!(out, "OK")?;
        if let Some(prev) = &r.prev_kv {
            self.kv(out, prev)?;
        }
        Ok(())
    }

    fn get(&self, out: &mut dyn Write, r: &RangeResponse) -> CtlResult {
        for kv in &r.kvs {
            self.kv(out, kv)?;
        }
        Ok(())
    }

    fn del(&self, out: &mut dyn Write, r: &DeleteRangeResponse) -> CtlResult {
        writeln!(out, "{}", r.deleted)?;
        for kv in &r.prev_kvs {
            self.kv(out, kv)?;
        }
        Ok(())
    }

    fn txn(&self, out: &mut dyn Write, r: &TxnResponse) -> CtlResult {
        writeln!(out, "{}", if r.succeeded { "SUCCESS" } else { "FAILURE" })?;
        for op in &r.responses {
            writeln!(out)?;
            match &op.response {
                Some(Response::ResponseDeleteRange(d)) => self.del(out, d)?,
                Some(Response::ResponsePut(p)) => self.put(out, p)?,
                Some(Response::ResponseRange(g)) => self.get(out, g)?,
                // etcdctl never sends nested transactions; it prints Go's `%+v` here.
                other => writeln!(out, "unexpected response {other:?}")?,
            }
        }
        Ok(())
    }

    fn member_list(&self, out: &mut dyn Write, r: &MemberListResponse) -> CtlResult {
        rows(out, &super::member_list_table(r).1)
    }

    fn endpoint_health(
        &self,
        _out: &mut dyn Write,
        err: &mut dyn Write,
        list: &[EpHealth],
    ) -> CtlResult {
        for h in list {
            if h.error.is_empty() {
                writeln!(
                    err,
                    "{} is healthy: successfully committed proposal: took = {}",
                    h.ep, h.took
                )?;
            } else {
                writeln!(
                    err,
                    "{} is unhealthy: failed to commit proposal: {}",
                    h.ep, h.error
                )?;
            }
        }
        Ok(())
    }

    fn endpoint_status(&self, out: &mut dyn Write, list: &[EpStatus]) -> CtlResult {
        rows(out, &super::endpoint_status_table(list).1)
    }

    fn endpoint_hashkv(&self, out: &mut dyn Write, list: &[EpHashKv]) -> CtlResult {
        rows(out, &super::endpoint_hashkv_table(list).1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;
    use ketch_api::etcdserverpb::{HashKvResponse, ResponseOp};

    fn render(f: impl FnOnce(&mut Vec<u8>) -> CtlResult) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn kv_responses() {
        let p = SimplePrinter::new(false);
        assert_eq!(render(|o| p.get(o, &td::range())), "foo\nbar\n");
        let put = PutResponse {
            header: td::header(),
            prev_kv: Some(td::kv("foo", "old")),
        };
        assert_eq!(render(|o| p.put(o, &put)), "OK\nfoo\nold\n");
        let del = DeleteRangeResponse {
            header: td::header(),
            deleted: 2,
            prev_kvs: vec![td::kv("a", "1")],
        };
        assert_eq!(render(|o| p.del(o, &del)), "2\na\n1\n");
        let hex = SimplePrinter::new(true);
        assert_eq!(
            render(|o| hex.get(o, &td::range())),
            "\\x66\\x6f\\x6f\n\\x62\\x61\\x72\n"
        );
        let mut only = SimplePrinter::new(false);
        assert!(only.enable_value_only());
        assert_eq!(render(|o| only.get(o, &td::range())), "bar\n");
    }

    #[test]
    fn txn_separates_responses_with_blank_lines() {
        let p = SimplePrinter::new(false);
        let txn = TxnResponse {
            header: td::header(),
            succeeded: false,
            responses: vec![
                ResponseOp {
                    response: Some(Response::ResponsePut(PutResponse {
                        header: td::header(),
                        prev_kv: None,
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseRange(td::range())),
                },
            ],
        };
        assert_eq!(render(|o| p.txn(o, &txn)), "FAILURE\n\nOK\n\nfoo\nbar\n");
    }

    #[test]
    fn listings() {
        let p = SimplePrinter::new(false);
        assert_eq!(
            render(|o| p.member_list(o, &td::member_list())),
            "bdae9bbc11dd390d, started, default, http://127.0.0.1:23801, http://127.0.0.1:23791, false\n"
        );
        let st = vec![EpStatus {
            ep: "127.0.0.1:23791".into(),
            resp: td::status(),
        }];
        assert_eq!(
            render(|o| p.endpoint_status(o, &st)),
            "127.0.0.1:23791, bdae9bbc11dd390d, 3.4.23, 25 kB, true, false, 2, 5, 5, \n"
        );
        let hk = vec![EpHashKv {
            ep: "127.0.0.1:23791".into(),
            resp: HashKvResponse {
                header: td::header(),
                hash: 3305255506,
                compact_revision: -1,
            },
        }];
        assert_eq!(
            render(|o| p.endpoint_hashkv(o, &hk)),
            "127.0.0.1:23791, 3305255506\n"
        );
        let health = vec![
            EpHealth {
                ep: "a".into(),
                health: true,
                took: "1ms".into(),
                error: String::new(),
            },
            EpHealth {
                ep: "b".into(),
                health: false,
                took: "5s".into(),
                error: "context deadline exceeded".into(),
            },
        ];
        let mut out = Vec::new();
        let mut err = Vec::new();
        p.endpoint_health(&mut out, &mut err, &health).unwrap();
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "a is healthy: successfully committed proposal: took = 1ms\nb is unhealthy: failed to commit proposal: context deadline exceeded\n"
        );
    }
}
