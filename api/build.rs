//! Compiles etcd's v3 API and Ketch's own records with a protoc shipped by a crate, so a fresh
//! machine needs no system protoc. PROTOC is set for this build-script process only: raft's own
//! build wants a 3.x protoc and must not see this one.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .bytes(".")
        // written by hand so a server can encode large ranges without a second copy
        .extern_path(
            ".etcdserverpb.RangeResponse",
            "crate::range_response::RangeResponse",
        )
        .compile_protos(
            &[
                "proto/mvccpb/kv.proto",
                "proto/authpb/auth.proto",
                "proto/etcdserverpb/rpc.proto",
                "proto/v3lockpb/v3lock.proto",
                "proto/v3electionpb/v3election.proto",
                "proto/ketchpb/raft.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
