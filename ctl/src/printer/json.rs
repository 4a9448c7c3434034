//! `-w json`: `json.Marshal` of the response structs, field names from their Go json tags
//! (`cluster_id`, `create_revision`, `peerURLs`, ...), one line per response.

use std::io::Write;

use ketch_api::etcdserverpb::response_op::Response;
use ketch_api::etcdserverpb::{
    DeleteRangeResponse, HashKvResponse, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, Member, MemberListResponse,
    PutResponse, RangeResponse, ResponseHeader, StatusResponse, TxnResponse, WatchResponse,
};
use ketch_api::mvccpb::KeyValue;

use super::gojson::{Json, Object};
use super::{EpHashKv, EpHealth, EpStatus, Printer};
use crate::error::CtlResult;

pub struct JsonPrinter;

fn header(h: &Option<ResponseHeader>) -> Option<Json> {
    h.as_ref().map(|h| {
        Object::new()
            .u64("cluster_id", h.cluster_id)
            .u64("member_id", h.member_id)
            .i64("revision", h.revision)
            .u64("raft_term", h.raft_term)
            .build()
    })
}

fn key_value(kv: &KeyValue) -> Json {
    Object::new()
        .bytes("key", &kv.key)
        .i64("create_revision", kv.create_revision)
        .i64("mod_revision", kv.mod_revision)
        .i64("version", kv.version)
        .bytes("value", &kv.value)
        .i64("lease", kv.lease)
        .build()
}

fn range(r: &RangeResponse) -> Json {
    Object::new()
        .object("header", header(&r.header))
        .array("kvs", r.kvs.iter().map(key_value).collect())
        .bool("more", r.more)
        .i64("count", r.count)
        .build()
}

fn put(r: &PutResponse) -> Json {
    Object::new()
        .object("header", header(&r.header))
        .object("prev_kv", r.prev_kv.as_ref().map(key_value))
        .build()
}

fn delete(r: &DeleteRangeResponse) -> Json {
    Object::new()
        .object("header", header(&r.header))
        .i64("deleted", r.deleted)
        .array("prev_kvs", r.prev_kvs.iter().map(key_value).collect())
        .build()
}

fn txn(r: &TxnResponse) -> Json {
    // ResponseOp's oneof is a Go interface field without a json tag: `{"Response":{"ResponsePut":{...}}}`.
    let responses = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(Response::ResponseRange(g)) => {
                    Object::new().field("ResponseRange", range(g)).build()
                }
                Some(Response::ResponsePut(p)) => {
                    Object::new().field("ResponsePut", put(p)).build()
                }
                Some(Response::ResponseDeleteRange(d)) => Object::new()
                    .field("ResponseDeleteRange", delete(d))
                    .build(),
                Some(Response::ResponseTxn(t)) => {
                    Object::new().field("ResponseTxn", txn(t)).build()
                }
                None => Json::Null,
            };
            Object::new().field("Response", inner).build()
        })
        .collect();
    Object::new()
        .object("header", header(&r.header))
        .bool("succeeded", r.succeeded)
        .array("responses", responses)
        .build()
}

fn member(m: &Member) -> Json {
    Object::new()
        .u64("ID", m.id)
        .string("name", &m.name)
        .strings("peerURLs", &m.peer_ur_ls)
        .strings("clientURLs", &m.client_ur_ls)
        .bool("isLearner", m.is_learner)
        .build()
}

fn member_list(r: &MemberListResponse) -> Json {
    Object::new()
        .object("header", header(&r.header))
        .array("members", r.members.iter().map(member).collect())
        .build()
}

fn status(r: &StatusResponse) -> Json {
    Object::new()
        .object("header", header(&r.header))
        .string("version", &r.version)
        .i64("dbSize", r.db_size)
        .u64("leader", r.leader)
        .u64("raftIndex", r.raft_index)
        .u64("raftTerm", r.raft_term)
        .u64("raftAppliedIndex", r.raft_applied_index)
        .strings("errors", &r.errors)
        .i64("dbSizeInUse", r.db_size_in_use)
        .bool("isLearner", r.is_learner)
        .build()
}

fn hash_kv(r: &HashKvResponse) -> Json {
    Object::new()
        .object("header", header(&r.header))
        .u64("hash", r.hash as u64)
        .i64("compact_revision", r.compact_revision)
        .build()
}

/// clientv3's lease responses embed `*pb.ResponseHeader`: its fields sit at the top level.
fn inline_header(h: &Option<ResponseHeader>) -> Object {
    let h = h.unwrap_or_default();
    Object::new()
        .u64("cluster_id", h.cluster_id)
        .u64("member_id", h.member_id)
        .i64("revision", h.revision)
        .u64("raft_term", h.raft_term)
}

fn number(v: impl ToString) -> Json {
    Json::Number(v.to_string())
}

/// clientv3's `WatchResponse`: Go field names, no json tags; the header is a value.
fn watch(r: &WatchResponse) -> Json {
    // clientv3 always makes the events slice: `[]`, never `null`.
    let events = {
        Json::Array(
            r.events
                .iter()
                .map(|ev| {
                    Object::new()
                        .i64("type", ev.r#type as i64)
                        .object("kv", ev.kv.as_ref().map(key_value))
                        .object("prev_kv", ev.prev_kv.as_ref().map(key_value))
                        .build()
                })
                .collect(),
        )
    };
    let h = r.header.unwrap_or_default();
    Object::new()
        .field("Header", header(&Some(h)).unwrap_or(Json::Null))
        .field("Events", events)
        .field("CompactRevision", number(r.compact_revision))
        .field("Canceled", Json::Bool(r.canceled))
        .field("Created", Json::Bool(r.created))
        .build()
}

fn print(out: &mut dyn Write, j: Json) -> CtlResult {
    writeln!(out, "{}", j.encode())?;
    Ok(())
}

impl Printer for JsonPrinter {
    fn format_name(&self) -> &'static str {
        "json"
    }

    fn watch(&self, out: &mut dyn Write, r: &WatchResponse) -> CtlResult {
        print(out, watch(r))
    }

    fn grant(&self, out: &mut dyn Write, r: &LeaseGrantResponse) -> CtlResult {
        let j = inline_header(&r.header)
            .field("ID", number(r.id))
            .field("TTL", number(r.ttl))
            .field("Error", Json::Str(r.error.as_bytes().to_vec()))
            .build();
        print(out, j)
    }

    fn revoke(&self, out: &mut dyn Write, _id: i64, r: &LeaseRevokeResponse) -> CtlResult {
        print(
            out,
            Object::new().object("header", header(&r.header)).build(),
        )
    }

    fn keep_alive(&self, out: &mut dyn Write, r: &LeaseKeepAliveResponse) -> CtlResult {
        let j = inline_header(&r.header)
            .field("ID", number(r.id))
            .field("TTL", number(r.ttl))
            .build();
        print(out, j)
    }

    fn time_to_live(
        &self,
        out: &mut dyn Write,
        r: &LeaseTimeToLiveResponse,
        _keys: bool,
    ) -> CtlResult {
        let keys = if r.keys.is_empty() {
            Json::Null
        } else {
            Json::Array(
                r.keys
                    .iter()
                    .map(|k| Json::Str(crate::gofmt::base64_std(k).into_bytes()))
                    .collect(),
            )
        };
        let j = inline_header(&r.header)
            .field("id", number(r.id))
            .field("ttl", number(r.ttl))
            .field("granted-ttl", number(r.granted_ttl))
            .field("keys", keys)
            .build();
        print(out, j)
    }

    fn leases(&self, out: &mut dyn Write, r: &LeaseLeasesResponse) -> CtlResult {
        let list = r
            .leases
            .iter()
            .map(|l| Object::new().field("id", number(l.id)).build())
            .collect();
        let j = inline_header(&r.header)
            .field("leases", Json::Array(list))
            .build();
        print(out, j)
    }

    fn put(&self, out: &mut dyn Write, r: &PutResponse) -> CtlResult {
        print(out, put(r))
    }

    fn get(&self, out: &mut dyn Write, r: &RangeResponse) -> CtlResult {
        print(out, range(r))
    }

    fn del(&self, out: &mut dyn Write, r: &DeleteRangeResponse) -> CtlResult {
        print(out, delete(r))
    }

    fn txn(&self, out: &mut dyn Write, r: &TxnResponse) -> CtlResult {
        print(out, txn(r))
    }

    fn member_list(&self, out: &mut dyn Write, r: &MemberListResponse) -> CtlResult {
        print(out, member_list(r))
    }

    fn endpoint_health(
        &self,
        out: &mut dyn Write,
        _err: &mut dyn Write,
        list: &[EpHealth],
    ) -> CtlResult {
        let items = list
            .iter()
            .map(|h| {
                Object::new()
                    .field("endpoint", Json::Str(h.ep.as_bytes().to_vec()))
                    .field("health", Json::Bool(h.health))
                    .field("took", Json::Str(h.took.as_bytes().to_vec()))
                    .string("error", &h.error)
                    .build()
            })
            .collect();
        print(out, Json::Array(items))
    }

    fn endpoint_status(&self, out: &mut dyn Write, list: &[EpStatus]) -> CtlResult {
        let items = list
            .iter()
            .map(|s| {
                Object::new()
                    .field("Endpoint", Json::Str(s.ep.as_bytes().to_vec()))
                    .field("Status", status(&s.resp))
                    .build()
            })
            .collect();
        print(out, Json::Array(items))
    }

    fn endpoint_hashkv(&self, out: &mut dyn Write, list: &[EpHashKv]) -> CtlResult {
        let items = list
            .iter()
            .map(|h| {
                Object::new()
                    .field("Endpoint", Json::Str(h.ep.as_bytes().to_vec()))
                    .field("HashKV", hash_kv(&h.resp))
                    .build()
            })
            .collect();
        print(out, Json::Array(items))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;
    use ketch_api::etcdserverpb::ResponseOp;

    fn render(f: impl FnOnce(&mut Vec<u8>) -> CtlResult) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn get_matches_etcdctl() {
        assert_eq!(
            render(|o| JsonPrinter.get(o, &td::range())),
            "{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":13668033151171901709,\"revision\":2,\"raft_term\":2},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\"value\":\"YmFy\"}],\"count\":1}\n"
        );
    }

    #[test]
    fn txn_wraps_oneof_like_go() {
        let r = TxnResponse {
            header: td::header(),
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(Response::ResponsePut(PutResponse {
                    header: td::header(),
                    prev_kv: None,
                })),
            }],
        };
        assert_eq!(
            render(|o| JsonPrinter.txn(o, &r)),
            "{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":13668033151171901709,\"revision\":2,\"raft_term\":2},\"succeeded\":true,\"responses\":[{\"Response\":{\"ResponsePut\":{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":13668033151171901709,\"revision\":2,\"raft_term\":2}}}}]}\n"
        );
    }

    #[test]
    fn endpoint_listings_match_etcdctl() {
        let st = vec![EpStatus {
            ep: "127.0.0.1:23791".into(),
            resp: td::status(),
        }];
        assert_eq!(
            render(|o| JsonPrinter.endpoint_status(o, &st)),
            "[{\"Endpoint\":\"127.0.0.1:23791\",\"Status\":{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":13668033151171901709,\"revision\":2,\"raft_term\":2},\"version\":\"3.4.23\",\"dbSize\":24576,\"leader\":13668033151171901709,\"raftIndex\":5,\"raftTerm\":2,\"raftAppliedIndex\":5,\"dbSizeInUse\":16384}}]\n"
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
            render(|o| JsonPrinter.endpoint_hashkv(o, &hk)),
            "[{\"Endpoint\":\"127.0.0.1:23791\",\"HashKV\":{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":13668033151171901709,\"revision\":2,\"raft_term\":2},\"hash\":3305255506,\"compact_revision\":-1}}]\n"
        );
        let health = vec![EpHealth {
            ep: "127.0.0.1:1".into(),
            health: false,
            took: "5.00071967s".into(),
            error: "context deadline exceeded".into(),
        }];
        let mut out = Vec::new();
        JsonPrinter
            .endpoint_health(&mut out, &mut Vec::new(), &health)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[{\"endpoint\":\"127.0.0.1:1\",\"health\":false,\"took\":\"5.00071967s\",\"error\":\"context deadline exceeded\"}]\n"
        );
        assert_eq!(
            render(|o| JsonPrinter.member_list(o, &td::member_list())),
            "{\"header\":{\"cluster_id\":15118495548433857066,\"member_id\":13668033151171901709,\"revision\":2,\"raft_term\":2},\"members\":[{\"ID\":13668033151171901709,\"name\":\"default\",\"peerURLs\":[\"http://127.0.0.1:23801\"],\"clientURLs\":[\"http://127.0.0.1:23791\"]}]}\n"
        );
    }
}
