//! The WAL's error type.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the WAL.
///
/// `Io` and `Poisoned` from [`Wal::save`](crate::Wal::save) or
/// [`Wal::save_snapshot`](crate::Wal::save_snapshot) mean the data may or may not be on disk:
/// the caller must stop using the WAL (etcd treats a failed WAL write as fatal) and reopen it,
/// which repairs the tail. Never retry an fsync.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system call failed on `path`.
    #[error("WAL I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A record that cannot be a torn write is damaged, or the files contradict each other.
    /// `offset` is the byte offset of the damaged record in `file`.
    #[error("WAL corrupt: {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Recovery found entries `from..=to` after the snapshot marker in no segment.
    #[error("WAL is missing entries {from}..={to} after the snapshot marker")]
    MissingEntries { from: u64, to: u64 },

    /// [`Wal::create`](crate::Wal::create) found segment files in `dir`.
    #[error("a WAL already exists in {}", dir.display())]
    AlreadyExists { dir: PathBuf },

    /// [`Wal::open`](crate::Wal::open) found no segment files in `dir` (or no `dir`).
    #[error("no WAL in {}", dir.display())]
    NotFound { dir: PathBuf },

    /// Another [`Wal`](crate::Wal), in this process or another, holds the lock on `dir`.
    #[error("the WAL in {} is in use by another writer", dir.display())]
    Locked { dir: PathBuf },

    /// `save` was given an entry that cannot extend the log: entries of one call must have
    /// consecutive indexes, the first must be at most `last_index + 1` (no gap) and above the
    /// snapshot marker's index.
    #[error(
        "entry index {index} cannot be saved: last index {last_index}, snapshot index {snapshot_index}"
    )]
    BadEntryIndex {
        index: u64,
        last_index: u64,
        snapshot_index: u64,
    },

    /// A single record would be larger than the format allows (4 GiB - 1).
    #[error("WAL record of {size} bytes is too large")]
    RecordTooLarge { size: usize },

    /// `save_commit_lazily` was given a hard state whose term or vote differs from the saved
    /// one: those must be synced.
    #[error("a hard state with a new term or vote must be saved with sync")]
    UnsyncedHardState,

    /// An earlier write or sync failed, so the tail of the live segment is unknown.
    #[error("an earlier WAL write or sync failed; reopen the WAL to repair it")]
    Poisoned,
}

impl WalError {
    pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Attaches the path an I/O error happened on.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, WalError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, WalError> {
        self.map_err(|source| WalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
