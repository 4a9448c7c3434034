//! Restoring a member's data from a snapshot a client saved (`etcdctl snapshot save`): the
//! backend copy is checked against the SHA-256 etcd's snapshot stream ends with, written as
//! the new member's backend, and made to start over as a new cluster — its applied index back
//! to 0 and its member list dropped, so the cluster named by `--initial-cluster` forms on it
//! with the data (keys, revisions, leases) of the snapshot, as etcd's restore does.

use std::io::Read;
use std::path::Path;

use ketch_mvcc::Store;

use crate::cluster::MEMBERS_META_KEY;
use crate::config::MemberConfig;

/// Size of the SHA-256 a saved snapshot ends with.
const SHA_LEN: usize = 32;

/// etcd's `hasChecksum`: backends are page-aligned, so a file 32 bytes past a multiple of 512
/// carries the checksum.
fn has_checksum(len: u64) -> bool {
    len % 512 == SHA_LEN as u64
}

/// Restores `snapshot` into `cfg`'s data dir (which must not exist yet). With `skip_hash_check`
/// a file without (or with a wrong) checksum is accepted, as etcd's `--skip-hash-check`.
pub fn restore_snapshot(
    snapshot: &Path,
    cfg: &MemberConfig,
    skip_hash_check: bool,
) -> Result<(), String> {
    if cfg.data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists",
            cfg.data_dir.display().to_string()
        ));
    }
    let mut raw = Vec::new();
    std::fs::File::open(snapshot)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| format!("open {}: {e}", snapshot.display()))?;
    let body_len = if has_checksum(raw.len() as u64) {
        let body = raw.len() - SHA_LEN;
        let sum = ring::digest::digest(&ring::digest::SHA256, &raw[..body]);
        if sum.as_ref() != &raw[body..] && !skip_hash_check {
            return Err("expected sha256 [..], got [..]: snapshot file is corrupt (use --skip-hash-check to restore it anyway)".into());
        }
        body
    } else if skip_hash_check {
        raw.len()
    } else {
        return Err("snapshot missing hash but --skip-hash-check=false".into());
    };
    let backend = cfg.backend_path();
    let dir = backend
        .parent()
        .ok_or("the backend path has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            &cfg.data_dir,
            &cfg.data_dir.join("member"),
            &dir.to_path_buf(),
        ] {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        }
    }
    std::fs::write(&backend, &raw[..body_len])
        .map_err(|e| format!("write {}: {e}", backend.display()))?;
    let store =
        Store::open(&backend).map_err(|e| format!("the snapshot is not a Ketch backend: {e}"))?;
    let mut wb = store.write().map_err(|e| e.to_string())?;
    wb.set_applied_index(0);
    wb.meta_delete(MEMBERS_META_KEY);
    wb.commit(true).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ketch_api::etcdserverpb::{PutRequest, RangeRequest};

    #[test]
    fn a_saved_snapshot_restores_with_its_data_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("src.db")).unwrap();
        let mut wb = store.write().unwrap();
        wb.put(&PutRequest {
            key: b"k".to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .unwrap();
        wb.set_applied_index(42);
        wb.meta_put(MEMBERS_META_KEY, b"old members");
        wb.commit(true).unwrap();
        let mut saved = Vec::new();
        store.snapshot_to(&mut saved).unwrap();
        let sum = ring::digest::digest(&ring::digest::SHA256, &saved);
        saved.extend_from_slice(sum.as_ref());
        let file = dir.path().join("saved.db");
        std::fs::write(&file, &saved).unwrap();

        let cfg = MemberConfig {
            data_dir: dir.path().join("restored.etcd"),
            ..Default::default()
        };
        restore_snapshot(&file, &cfg, false).unwrap();
        let restored = Store::open(&cfg.backend_path()).unwrap();
        assert_eq!(restored.applied_index(), 0);
        assert_eq!(restored.meta_get(MEMBERS_META_KEY).unwrap(), None);
        let r = restored
            .range(&RangeRequest {
                key: b"k".to_vec().into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs[0].value.as_ref(), b"v");
        assert_eq!(
            restored.current_revision(),
            store.current_revision(),
            "revisions carry over"
        );
        drop(restored);

        assert!(restore_snapshot(&file, &cfg, false)
            .unwrap_err()
            .contains("exists"));
        let mut bad = saved.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        std::fs::write(&file, &bad).unwrap();
        let other = MemberConfig {
            data_dir: dir.path().join("other.etcd"),
            ..Default::default()
        };
        assert!(restore_snapshot(&file, &other, false)
            .unwrap_err()
            .contains("corrupt"));
    }
}
