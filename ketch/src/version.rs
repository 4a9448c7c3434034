//! What `ketch --version` prints and the startup lines carry. The first line is exactly
//! etcd's (`etcd Version: 3.4.23`) because tools parse it to learn the server's API level.

use ketch_api::ETCD_SERVER_VERSION;

pub const KETCH_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `KETCH_GIT_SHA` at build time, if set and not empty.
pub fn git_sha() -> &'static str {
    match option_env!("KETCH_GIT_SHA") {
        Some(sha) if !sha.is_empty() => sha,
        _ => "not provided",
    }
}

/// `rustc 1.90.0`, recorded by build.rs when it could run the compiler.
pub fn rust_version() -> Option<&'static str> {
    option_env!("KETCH_RUSTC_VERSION")
}

/// The architecture under Go's name, as etcd prints it (`amd64`, `arm64`).
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

pub fn os_arch() -> String {
    format!(
        "{}/{}",
        std::env::consts::OS,
        go_arch(std::env::consts::ARCH)
    )
}

/// The `--version` text, one line per item, ending with a newline.
pub fn render(git_sha: &str, rust_version: Option<&str>, os_arch: &str) -> String {
    let mut text = format!(
        "etcd Version: {ETCD_SERVER_VERSION}\nKetch Version: {KETCH_VERSION}\nGit SHA: {git_sha}\n"
    );
    if let Some(rust) = rust_version {
        text.push_str(&format!("Rust Version: {rust}\n"));
    }
    text.push_str(&format!("OS/Arch: {os_arch}\n"));
    text
}

pub fn version_text() -> String {
    render(git_sha(), rust_version(), &os_arch())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_has_etcds_first_line() {
        let text = render("abc123", Some("rustc 1.90.0"), "linux/amd64");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "etcd Version: 3.4.23",
                &format!("Ketch Version: {KETCH_VERSION}"),
                "Git SHA: abc123",
                "Rust Version: rustc 1.90.0",
                "OS/Arch: linux/amd64",
            ]
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn rust_version_line_is_left_out_when_unknown() {
        let text = render("not provided", None, "linux/arm64");
        assert_eq!(text.lines().count(), 4);
        assert!(!text.contains("Rust Version"));
    }

    #[test]
    fn this_build_reports_real_values() {
        let text = version_text();
        assert!(text.starts_with("etcd Version: 3.4.23\n"));
        assert!(text.contains(&format!("OS/Arch: {}/", std::env::consts::OS)));
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert!(rust_version().is_some_and(|v| v.starts_with("rustc ")));
    }
}
