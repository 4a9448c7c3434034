//! ketch-mvcc
