use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::{PutRequest, RangeRequest};
use ketch_api::status::EtcdError;
use ketch_mvcc::Store;

use super::{Lessor, PrimaryError};

fn open_tmp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

fn put(store: &Store, lessor: &Lessor, key: &str, lease: i64) {
    let mut wb = store.write().unwrap();
    wb.put(&PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        lease,
        ..Default::default()
    })
    .unwrap();
    lessor.apply_key_changes(&wb.take_lease_changes());
    wb.commit(false).unwrap();
}

fn keys(store: &Store) -> Vec<String> {
    let r = store
        .range(&RangeRequest {
            key: b"\0".to_vec().into(),
            range_end: b"\0".to_vec().into(),
            ..Default::default()
        })
        .unwrap();
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[test]
fn minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
    assert_eq!(
        Lessor::min_ttl_for(Duration::from_millis(100), Duration::from_millis(1000)),
        2
    );
    assert_eq!(
        Lessor::min_ttl_for(Duration::from_millis(50), Duration::from_millis(500)),
        1
    );
    assert_eq!(
        Lessor::min_ttl_for(Duration::from_millis(100), Duration::from_millis(3000)),
        5
    );
}

#[test]
fn grant_checks_like_etcd_and_raises_small_ttls() {
    let (_d, store) = open_tmp();
    let lessor = Lessor::new(2, None, false);
    let mut wb = store.write().unwrap();
    assert_eq!(lessor.grant(&mut wb, 1, 60), Ok(60));
    assert_eq!(lessor.grant(&mut wb, 1, 60), Err(EtcdError::LeaseExist));
    assert_eq!(lessor.grant(&mut wb, 0, 60), Err(EtcdError::LeaseNotFound));
    assert_eq!(
        lessor.grant(&mut wb, 2, super::MAX_LEASE_TTL + 1),
        Err(EtcdError::LeaseTtlTooLarge)
    );
    assert_eq!(lessor.grant(&mut wb, 3, 1), Ok(2));
    assert_eq!(lessor.grant(&mut wb, -5, 0), Ok(2));
    wb.commit(false).unwrap();
    assert!(lessor.exists(1) && lessor.exists(3) && lessor.exists(-5) && !lessor.exists(2));
    assert_eq!(store.leases().unwrap().len(), 3);
}

#[test]
fn revoke_deletes_attached_keys_in_one_revision() {
    let (_d, store) = open_tmp();
    let lessor = Lessor::new(2, None, false);
    let mut wb = store.write().unwrap();
    lessor.grant(&mut wb, 7, 60).unwrap();
    lessor.grant(&mut wb, 8, 60).unwrap();
    wb.commit(false).unwrap();
    put(&store, &lessor, "b", 7);
    put(&store, &lessor, "a", 7);
    put(&store, &lessor, "c", 8);
    put(&store, &lessor, "moved", 7);
    put(&store, &lessor, "moved", 8); // re-attached to 8
    put(&store, &lessor, "plain", 0);
    let before = store.current_revision();
    let mut wb = store.write().unwrap();
    lessor.revoke(&mut wb, 7).unwrap();
    lessor.apply_key_changes(&wb.take_lease_changes());
    let events = wb.commit(false).unwrap();
    assert_eq!(
        store.current_revision(),
        before + 1,
        "one revision for all of the lease's keys"
    );
    let deleted: Vec<_> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.kv.as_ref().unwrap().key).into_owned())
        .collect();
    assert_eq!(deleted, ["a", "b"]);
    assert_eq!(keys(&store), ["c", "moved", "plain"]);
    assert!(!lessor.exists(7));
    let mut wb = store.write().unwrap();
    assert_eq!(lessor.revoke(&mut wb, 7), Err(EtcdError::LeaseNotFound));
    drop(wb);
    assert_eq!(
        store
            .leases()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        [8]
    );
}

#[test]
fn recover_rebuilds_leases_and_their_keys_from_the_store() {
    let (_d, store) = open_tmp();
    let lessor = Lessor::new(2, None, false);
    let mut wb = store.write().unwrap();
    lessor.grant(&mut wb, 7, 30).unwrap();
    wb.commit(false).unwrap();
    put(&store, &lessor, "k1", 7);
    put(&store, &lessor, "k2", 7);

    let again = Lessor::new(2, None, false);
    again.recover(&store).unwrap();
    assert!(again.exists(7));
    assert_eq!(again.time_to_live(7, true), Err(PrimaryError::NotPrimary));
    again.promote(Duration::ZERO);
    let ttl = again.time_to_live(7, true).unwrap();
    assert_eq!(ttl.granted, 30);
    assert!((29..=30).contains(&ttl.remaining), "{ttl:?}");
    assert_eq!(ttl.keys, [b"k1".to_vec(), b"k2".to_vec()]);
    assert!(again.time_to_live(7, false).unwrap().keys.is_empty());
}

#[test]
fn only_the_primary_renews_and_expires() {
    let (_d, store) = open_tmp();
    let lessor = Lessor::new(1, None, false);
    let mut wb = store.write().unwrap();
    lessor.grant(&mut wb, 1, 1).unwrap();
    lessor.grant(&mut wb, 2, 100).unwrap();
    wb.commit(false).unwrap();
    assert_eq!(lessor.renew(1), Err(PrimaryError::NotPrimary));
    assert!(lessor
        .take_expired(Instant::now() + Duration::from_secs(1000), 10)
        .is_empty());
    assert_eq!(
        lessor.next_deadline(),
        None,
        "followers keep leases forever"
    );

    lessor.promote(Duration::ZERO);
    assert_eq!(lessor.renew(1), Ok(1));
    assert_eq!(lessor.renew(9), Err(PrimaryError::NotFound));
    let later = Instant::now() + Duration::from_secs(2);
    assert!(lessor.next_deadline().unwrap() <= later);
    assert_eq!(lessor.take_expired(later, 10), [1]);
    // offered again only after the retry interval, should its revocation not apply
    assert!(lessor.take_expired(later, 10).is_empty());
    assert_eq!(lessor.take_expired(later + super::EXPIRED_RETRY, 10), [1]);
    assert_eq!(lessor.leases(), [1, 2], "soonest expiry first");

    lessor.demote();
    assert_eq!(lessor.renew(2), Err(PrimaryError::NotPrimary));
    assert!(lessor
        .take_expired(later + Duration::from_secs(1000), 10)
        .is_empty());
}

#[test]
fn promotion_extends_every_lease_and_spreads_mass_expiry() {
    let (_d, store) = open_tmp();
    let lessor = Lessor::new(1, None, false);
    let mut wb = store.write().unwrap();
    for id in 1..=3000 {
        lessor.grant(&mut wb, id, 10).unwrap();
    }
    wb.commit(false).unwrap();
    let start = Instant::now();
    lessor.promote(Duration::from_secs(1));
    // nothing expires before TTL + extend
    assert!(lessor
        .take_expired(start + Duration::from_millis(10_900), 5000)
        .is_empty());
    // and no second sees more than 3/4 of the revoke rate
    let per_second = 3 * super::primary::REVOKE_PER_SECOND / 4;
    // (leases offered once come back after the retry interval: count each once)
    let mut seen = std::collections::HashSet::new();
    for s in 11..20 {
        let offered = lessor.take_expired(
            start + Duration::from_secs(s) + Duration::from_millis(100),
            5000,
        );
        let n = offered.into_iter().filter(|id| seen.insert(*id)).count();
        assert!(n <= per_second + 1, "{n} leases expire in second {s}");
    }
    assert_eq!(seen.len(), 3000);
}

#[test]
fn checkpoints_carry_the_remaining_ttl_and_renewals_clear_them() {
    let (_d, store) = open_tmp();
    let lessor = Lessor::new(1, Some(Duration::from_secs(1)), true);
    lessor.promote(Duration::ZERO);
    let mut wb = store.write().unwrap();
    lessor.grant(&mut wb, 5, 10).unwrap();
    lessor.grant(&mut wb, 6, 1).unwrap(); // shorter than the interval: never checkpointed
    wb.commit(false).unwrap();
    let at = Instant::now() + Duration::from_millis(2500);
    let cps = lessor.take_checkpoints(at, 100);
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].id, 5);
    assert!((7..=8).contains(&cps[0].remaining_ttl), "{cps:?}");
    // applied on every member; persisted here
    let mut wb = store.write().unwrap();
    lessor.checkpoint(&mut wb, &cps);
    wb.commit(false).unwrap();
    let follower = Lessor::new(1, None, false);
    follower.recover(&store).unwrap();
    follower.promote(Duration::ZERO);
    let ttl = follower.time_to_live(5, false).unwrap();
    assert!(
        ttl.remaining <= 8,
        "a new leader starts from the checkpoint: {ttl:?}"
    );
    // a renewal restores the full TTL and asks for a checkpoint that clears the remainder
    assert_eq!(lessor.renew(5), Ok(10));
    let cleared = lessor.take_checkpoints(Instant::now(), 100);
    assert_eq!(cleared.len(), 1);
    assert_eq!((cleared[0].id, cleared[0].remaining_ttl), (5, 0));
}
