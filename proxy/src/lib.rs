//! ketch-proxy: the per-host proxy (`ketch --proxy on|readonly`). Not built yet: it is the
//! subject of its own issue and depends on the cluster and watch work. The crate exists so the
//! workspace has the shape the architecture map gives; `ketch --proxy on` refuses to start
//! with a clear message until this lands.
