//! raft-rs logs through slog; this drain forwards its records to `tracing` under the `raft`
//! package so one subscriber formats everything the member logs.

pub struct SlogToTracing;

impl slog::Drain for SlogToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        _values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}"),
            slog::Level::Debug | slog::Level::Trace => tracing::debug!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}
