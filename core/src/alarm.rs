//! Alarms (etcd's alarm store) and the space quota. An alarm is raised and disarmed through the
//! Raft log, so every member holds the same list, kept in the backend. While a NOSPACE alarm is
//! raised, writes that would grow the store — puts, txns that write, lease grants — are refused
//! with etcd's "database space exceeded"; reads, deletes and compaction still work, so an
//! operator can make room and `etcdctl alarm disarm`.
//!
//! The quota (`--quota-backend-bytes`, 2 GiB by default) is checked before a growing write is
//! proposed, against the bytes of live keys and values the store holds (etcd checks the
//! backend file's size, which only a defragmentation shrinks; here a compaction or a delete
//! makes room by itself). Going over it raises NOSPACE for this member.

use std::collections::BTreeSet;
use std::sync::RwLock;

use ketch_api::etcdserverpb::alarm_request::AlarmAction;
use ketch_api::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use ketch_mvcc::{Store, WriteBatch};
use prost::Message;

/// Where the raised alarms are kept in the backend (an encoded AlarmResponse's list).
const ALARMS_META_KEY: &str = "alarms";

/// The raised alarms: (member id, alarm type).
#[derive(Default)]
pub struct Alarms {
    raised: RwLock<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    /// The alarms the store holds (at start, and after a snapshot replaced it).
    pub fn recover(&self, store: &Store) -> Result<(), ketch_mvcc::StoreError> {
        let raised = match store.meta_get(ALARMS_META_KEY)? {
            Some(raw) => AlarmResponse::decode(raw.as_slice())
                .map(|r| r.alarms.iter().map(|a| (a.member_id, a.alarm)).collect())
                .unwrap_or_default(),
            None => BTreeSet::new(),
        };
        *self.raised.write().unwrap_or_else(|e| e.into_inner()) = raised;
        Ok(())
    }

    /// Every raised alarm, as etcd lists them (by member, then type).
    pub fn list(&self) -> Vec<AlarmMember> {
        let raised = self.raised.read().unwrap_or_else(|e| e.into_inner());
        raised
            .iter()
            .map(|(member_id, alarm)| AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            })
            .collect()
    }

    /// Whether some member raised NOSPACE (writes that grow the store are refused).
    pub fn no_space(&self) -> bool {
        let raised = self.raised.read().unwrap_or_else(|e| e.into_inner());
        raised.iter().any(|(_, a)| *a == AlarmType::Nospace as i32)
    }

    /// Applies a committed alarm request: raise or disarm, answered with the alarms it changed
    /// (etcd answers a disarm of an alarm that is not raised with none).
    pub fn apply(&self, wb: &mut WriteBatch<'_>, req: &AlarmRequest) -> AlarmResponse {
        let mut raised = self.raised.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        match req.action() {
            AlarmAction::Get => {
                return AlarmResponse {
                    header: None,
                    alarms: self.list_locked(&raised),
                }
            }
            AlarmAction::Activate => {
                if req.alarm != AlarmType::None as i32 {
                    raised.insert((req.member_id, req.alarm));
                    changed.push(AlarmMember {
                        member_id: req.member_id,
                        alarm: req.alarm,
                    });
                }
            }
            AlarmAction::Deactivate => {
                // NONE disarms every alarm of the member, as etcdctl's `alarm disarm` sends it
                let doomed: Vec<(u64, i32)> = raised
                    .iter()
                    .filter(|(m, a)| {
                        *m == req.member_id
                            && (req.alarm == AlarmType::None as i32 || *a == req.alarm)
                    })
                    .copied()
                    .collect();
                for (m, a) in doomed {
                    raised.remove(&(m, a));
                    changed.push(AlarmMember {
                        member_id: m,
                        alarm: a,
                    });
                }
            }
        }
        let all = AlarmResponse {
            header: None,
            alarms: self.list_locked(&raised),
        };
        wb.meta_put(ALARMS_META_KEY, &all.encode_to_vec());
        AlarmResponse {
            header: None,
            alarms: changed,
        }
    }

    fn list_locked(&self, raised: &BTreeSet<(u64, i32)>) -> Vec<AlarmMember> {
        raised
            .iter()
            .map(|(member_id, alarm)| AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_are_raised_disarmed_and_kept_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let alarms = Alarms::default();
        let raise = |member_id| AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id,
            alarm: AlarmType::Nospace as i32,
        };
        let mut wb = store.write().unwrap();
        assert_eq!(alarms.apply(&mut wb, &raise(7)).alarms.len(), 1);
        alarms.apply(&mut wb, &raise(9));
        wb.commit(false).unwrap();
        assert!(alarms.no_space());
        let again = Alarms::default();
        again.recover(&store).unwrap();
        assert_eq!(again.list().len(), 2);
        let mut wb = store.write().unwrap();
        let disarm = |member_id| AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id,
            alarm: AlarmType::None as i32,
        };
        assert_eq!(alarms.apply(&mut wb, &disarm(7)).alarms.len(), 1);
        assert!(alarms.no_space(), "member 9's alarm is still raised");
        assert!(alarms.apply(&mut wb, &disarm(7)).alarms.is_empty());
        alarms.apply(&mut wb, &disarm(9));
        wb.commit(false).unwrap();
        assert!(!alarms.no_space());
        again.recover(&store).unwrap();
        assert!(again.list().is_empty());
    }
}
