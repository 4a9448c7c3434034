//! `-w table`: member and endpoint listings as bordered tables; etcdctl has no table for
//! key-value responses.

use std::io::Write;

use ketch_api::etcdserverpb::MemberListResponse;

use super::tablewriter::TableWriter;
use super::{EpHashKv, EpHealth, EpStatus, Printer, Table};
use crate::error::CtlResult;

pub struct TablePrinter;

fn render(out: &mut dyn Write, (header, rows): Table) -> CtlResult {
    let mut t = TableWriter::new(&header);
    for row in &rows {
        t.append(row);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

impl Printer for TablePrinter {
    fn format_name(&self) -> &'static str {
        "table"
    }

    fn member_list(&self, out: &mut dyn Write, r: &MemberListResponse) -> CtlResult {
        render(out, super::member_list_table(r))
    }

    fn endpoint_health(
        &self,
        out: &mut dyn Write,
        _err: &mut dyn Write,
        list: &[EpHealth],
    ) -> CtlResult {
        render(out, super::endpoint_health_table(list))
    }

    fn endpoint_status(&self, out: &mut dyn Write, list: &[EpStatus]) -> CtlResult {
        render(out, super::endpoint_status_table(list))
    }

    fn endpoint_hashkv(&self, out: &mut dyn Write, list: &[EpHashKv]) -> CtlResult {
        render(out, super::endpoint_hashkv_table(list))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata as td;
    use super::*;

    #[test]
    fn member_list_matches_etcdctl() {
        let mut out = Vec::new();
        TablePrinter
            .member_list(&mut out, &td::member_list())
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+------------------+---------+---------+------------------------+------------------------+------------+
|        ID        | STATUS  |  NAME   |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+---------+------------------------+------------------------+------------+
| bdae9bbc11dd390d | started | default | http://127.0.0.1:23801 | http://127.0.0.1:23791 |      false |
+------------------+---------+---------+------------------------+------------------------+------------+
"
        );
    }

    #[test]
    fn endpoint_status_matches_etcdctl() {
        let mut out = Vec::new();
        TablePrinter
            .endpoint_status(
                &mut out,
                &[EpStatus {
                    ep: "127.0.0.1:23791".into(),
                    resp: td::status(),
                }],
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:23791 | bdae9bbc11dd390d |  3.4.23 |   25 kB |      true |      false |         2 |          5 |                  5 |        |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
"
        );
    }

    #[test]
    fn key_value_responses_are_unsupported() {
        let err = TablePrinter.get(&mut Vec::new(), &td::range()).unwrap_err();
        assert_eq!(err.code, 4);
        assert_eq!(err.to_string(), "table not supported as output format");
    }
}
