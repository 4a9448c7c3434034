//! Records the compiler version for `ketch --version`. The Git SHA comes from `KETCH_GIT_SHA`
//! at build time (read with `option_env!`, which Cargo already tracks).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KETCH_GIT_SHA");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).arg("--version").output() {
        if out.status.success() {
            // "rustc 1.90.0 (1159e78c4 2025-09-14)" -> "rustc 1.90.0", the shape of Go's "go1.19.8".
            let text = String::from_utf8_lossy(&out.stdout);
            let short: Vec<&str> = text.split_whitespace().take(2).collect();
            if short.len() == 2 {
                println!("cargo:rustc-env=KETCH_RUSTC_VERSION={}", short.join(" "));
            }
        }
    }
}
