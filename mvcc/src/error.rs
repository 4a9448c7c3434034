//! Errors of the store itself, as opposed to the etcd errors a request can end in
//! ([`ketch_api::status::EtcdError`]).

use ketch_api::status::EtcdError;

/// A failure of the backend or of the store's own invariants. The apply loop treats any of
/// these as fatal, as etcd does with a failed backend write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("mvcc backend: {0}")]
    Backend(#[from] redb::Error),
    #[error("mvcc i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("mvcc store is corrupt: {0}")]
    Corrupt(String),
    #[error("mvcc write batch is unusable after an earlier failure: {0}")]
    Poisoned(String),
    #[error("mvcc store already has a write batch open (one writer at a time)")]
    WriterBusy,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Backend(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What can stop a request inside the store: an etcd error for the client, a backend failure,
/// or (readers only) a compaction that overtook the read, which the read answers by starting
/// over.
#[derive(Debug)]
pub(crate) enum Failure {
    Etcd(EtcdError),
    Store(StoreError),
    Retry,
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Failure {
        Failure::Etcd(e)
    }
}

macro_rules! failure_from_store {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::Store(e.into())
            }
        }
    )*};
}
failure_from_store!(
    StoreError,
    std::io::Error,
    redb::TableError,
    redb::StorageError,
    redb::TransactionError
);

impl From<crate::index::Compacted> for Failure {
    fn from(_: crate::index::Compacted) -> Failure {
        Failure::Retry
    }
}
