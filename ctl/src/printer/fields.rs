//! `-w fields`: one `"Name" : value` line per field, strings quoted the way Go's `%q` quotes.

use std::io::Write;

use ketch_api::etcdserverpb::response_op::Response;
use ketch_api::etcdserverpb::{
    DeleteRangeResponse, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberListResponse, PutResponse, RangeResponse,
    ResponseHeader, TxnResponse, WatchResponse,
};
use ketch_api::mvccpb::KeyValue;

use super::{EpHashKv, EpHealth, EpStatus, Printer};
use crate::error::CtlResult;
use crate::gofmt::{quote, string_slice_v};

pub struct FieldsPrinter;

fn kv(out: &mut dyn Write, prefix: &str, kv: &KeyValue) -> CtlResult {
    writeln!(out, "\"{prefix}Key\" : {}", quote(&kv.key))?;
    writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision)?;
    writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision)?;
    writeln!(out, "\"{prefix}Version\" : {}", kv.version)?;
    writeln!(out, "\"{prefix}Value\" : {}", quote(&kv.value))?;
    writeln!(out, "\"{prefix}Lease\" : {}", kv.lease)?;
    Ok(())
}

/// etcdctl dereferences the header unconditionally; servers always send one.
fn hdr(out: &mut dyn Write, h: &Option<ResponseHeader>) -> CtlResult {
    let h = h.unwrap_or_default();
    writeln!(out, "\"ClusterID\" : {}", h.cluster_id)?;
    writeln!(out, "\"MemberID\" : {}", h.member_id)?;
    writeln!(out, "\"Revision\" : {}", h.revision)?;
    writeln!(out, "\"RaftTerm\" : {}", h.raft_term)?;
    Ok(())
}

impl Printer for FieldsPrinter {
    fn format_name(&self) -> &'static str {
        "fields"
    }

    fn watch(&self, out: &mut dyn Write, r: &WatchResponse) -> CtlResult {
        hdr(out, &r.header)?;
        for ev in &r.events {
            writeln!(out, "\"Type\" : {}", super::event_type_name(ev.r#type))?;
            if let Some(prev) = &ev.prev_kv {
                kv(out, "Prev", prev)?;
            }
            kv(out, "", &ev.kv.clone().unwrap_or_default())?;
        }
        Ok(())
    }

    fn grant(&self, out: &mut dyn Write, r: &LeaseGrantResponse) -> CtlResult {
        hdr(out, &r.header)?;
        writeln!(out, "\"ID\" : {}", r.id)?;
        writeln!(out, "\"TTL\" : {}", r.ttl)?;
        Ok(())
    }

    fn revoke(&self, out: &mut dyn Write, _id: i64, r: &LeaseRevokeResponse) -> CtlResult {
        hdr(out, &r.header)
    }

    fn keep_alive(&self, out: &mut dyn Write, r: &LeaseKeepAliveResponse) -> CtlResult {
        hdr(out, &r.header)?;
        writeln!(out, "\"ID\" : {}", r.id)?;
        writeln!(out, "\"TTL\" : {}", r.ttl)?;
        Ok(())
    }

    fn time_to_live(
        &self,
        out: &mut dyn Write,
        r: &LeaseTimeToLiveResponse,
        _keys: bool,
    ) -> CtlResult {
        hdr(out, &r.header)?;
        writeln!(out, "\"ID\" : {}", r.id)?;
        writeln!(out, "\"TTL\" : {}", r.ttl)?;
        writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl)?;
        for k in &r.keys {
            writeln!(out, "\"Key\" : {}", quote(k))?;
        }
        Ok(())
    }

    fn leases(&self, out: &mut dyn Write, r: &LeaseLeasesResponse) -> CtlResult {
        hdr(out, &r.header)?;
        for l in &r.leases {
            writeln!(out, "\"ID\" : {}", l.id)?;
        }
        Ok(())
    }

    fn del(&self, out: &mut dyn Write, r: &DeleteRangeResponse) -> CtlResult {
        hdr(out, &r.header)?;
        writeln!(out, "\"Deleted\" : {}", r.deleted)?;
        for p in &r.prev_kvs {
            kv(out, "Prev", p)?;
        }
        Ok(())
    }

    fn get(&self, out: &mut dyn Write, r: &RangeResponse) -> CtlResult {
        hdr(out, &r.header)?;
        for k in &r.kvs {
            kv(out, "", k)?;
        }
        writeln!(out, "\"More\" : {}", r.more)?;
        writeln!(out, "\"Count\" : {}", r.count)?;
        Ok(())
    }

    fn put(&self, out: &mut dyn Write, r: &PutResponse) -> CtlResult {
        hdr(out, &r.header)?;
        if let Some(p) = &r.prev_kv {
            kv(out, "Prev", p)?;
        }
        Ok(())
    }

    fn txn(&self, out: &mut dyn Write, r: &TxnResponse) -> CtlResult {
        hdr(out, &r.header)?;
        writeln!(out, "\"Succeeded\" : {}", r.succeeded)?;
        for op in &r.responses {
            match &op.response {
                Some(Response::ResponseDeleteRange(d)) => self.del(out, d)?,
                Some(Response::ResponsePut(p)) => self.put(out, p)?,
                Some(Response::ResponseRange(g)) => self.get(out, g)?,
                other => writeln!(
                    out,
                    "\"Unknown\" : {}",
                    quote(format!("{other:?}").as_bytes())
                )?,
            }
        }
        Ok(())
    }

    fn member_list(&self, out: &mut dyn Write, r: &MemberListResponse) -> CtlResult {
        hdr(out, &r.header)?;
        for m in &r.members {
            writeln!(out, "\"ID\" : {}", m.id)?;
            writeln!(out, "\"Name\" : {}", quote(m.name.as_bytes()))?;
            for u in &m.peer_ur_ls {
                writeln!(out, "\"PeerURL\" : {}", quote(u.as_bytes()))?;
            }
            for u in &m.client_ur_ls {
                writeln!(out, "\"ClientURL\" : {}", quote(u.as_bytes()))?;
            }
            writeln!(out, "\"IsLearner\" : {}", m.is_learner)?;
            writeln!(out)?;
        }
        Ok(())
    }

    fn endpoint_health(
        &self,
        out: &mut dyn Write,
        _err: &mut dyn Write,
        list: &[EpHealth],
    ) -> CtlResult {
        for h in list {
            writeln!(out, "\"Endpoint\" : {}", quote(h.ep.as_bytes()))?;
            writeln!(out, "\"Health\" : {}", h.health)?;
            writeln!(out, "\"Took\" : {}", h.took)?;
            writeln!(out, "\"Error\" : {}", h.error)?;
            writeln!(out)?;
        }
        Ok(())
    }

    fn endpoint_status(&self, out: &mut dyn Write, list: &[EpStatus]) -> CtlResult {
        for s in list {
            let r = &s.resp;
            hdr(out, &r.header)?;
            writeln!(out, "\"Version\" : {}", quote(r.version.as_bytes()))?;
            writeln!(out, "\"DBSize\" : {}", r.db_size)?;
            writeln!(out, "\"Leader\" : {}", r.leader)?;
            writeln!(out, "\"IsLearner\" : {}", r.is_learner)?;
            writeln!(out, "\"RaftIndex\" : {}", r.raft_index)?;
            writeln!(out, "\"RaftTerm\" : {}", r.raft_term)?;
            writeln!(out, "\"RaftAppliedIndex\" : {}", r.raft_applied_index)?;
            writeln!(out, "\"Errors\" : {}", string_slice_v(&r.errors))?;
            writeln!(out, "\"Endpoint\" : {}", quote(s.ep.as_bytes()))?;
            writeln!(out)?;
        }
        Ok(())
    }

    fn endpoint_hashkv(&self, out: &mut dyn Write, list: &[EpHashKv]) -> CtlResult {
        for h in list {
            hdr(out, &h.resp.header)?;
            writeln!(out, "\"Endpoint\" : {}", quote(h.ep.as_bytes()))?;
            writeln!(out, "\"Hash\" : {}", h.resp.hash)?;
            writeln!(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;

    fn render(f: impl FnOnce(&mut Vec<u8>) -> CtlResult) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    const HDR: &str = "\"ClusterID\" : 15118495548433857066\n\"MemberID\" : 13668033151171901709\n\"Revision\" : 2\n\"RaftTerm\" : 2\n";

    #[test]
    fn get_matches_etcdctl() {
        let expected = format!(
            "{HDR}\"Key\" : \"foo\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 2\n\"Version\" : 1\n\"Value\" : \"bar\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"
        );
        assert_eq!(render(|o| FieldsPrinter.get(o, &td::range())), expected);
    }

    #[test]
    fn member_and_status_listings() {
        let expected = format!(
            "{HDR}\"ID\" : 13668033151171901709\n\"Name\" : \"default\"\n\"PeerURL\" : \"http://127.0.0.1:23801\"\n\"ClientURL\" : \"http://127.0.0.1:23791\"\n\"IsLearner\" : false\n\n"
        );
        assert_eq!(
            render(|o| FieldsPrinter.member_list(o, &td::member_list())),
            expected
        );
        let st = vec![EpStatus {
            ep: "127.0.0.1:23791".into(),
            resp: td::status(),
        }];
        let expected = format!(
            "{HDR}\"Version\" : \"3.4.23\"\n\"DBSize\" : 24576\n\"Leader\" : 13668033151171901709\n\"IsLearner\" : false\n\"RaftIndex\" : 5\n\"RaftTerm\" : 2\n\"RaftAppliedIndex\" : 5\n\"Errors\" : []\n\"Endpoint\" : \"127.0.0.1:23791\"\n\n"
        );
        assert_eq!(render(|o| FieldsPrinter.endpoint_status(o, &st)), expected);
    }
}
