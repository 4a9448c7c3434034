//! Member: one running Ketch member — its Raft node, WAL, MVCC store and client/peer servers —
//! started from a [`MemberConfig`] and stopped as a unit.

use crate::config::MemberConfig;

/// Why a member could not start. The message is for the operator's log.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Other(String),
}

pub struct Member {
    _config: MemberConfig,
}

impl Member {
    /// Starts the member and returns once it serves clients.
    pub async fn start(config: MemberConfig) -> Result<Member, StartError> {
        config.validate()?;
        Err(StartError::Other("member start is being built".into()))
    }

    /// Stops serving, flushes the store and waits for every task to end.
    pub async fn stop(self) {}
}
