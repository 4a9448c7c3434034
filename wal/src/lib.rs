//! ketch-wal
