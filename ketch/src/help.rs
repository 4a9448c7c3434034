//! `ketch --help`, rendered from the flag table. As with etcd, the short usage goes to stderr
//! (it also follows every command-line error) and the flag list to stdout.

use std::fmt::Write as _;

use crate::flags::{Section, FLAGS};

pub fn usage() -> String {
    "Usage:

  ketch [flags]
    Start a member of an etcd 3.4 compatible cluster, with etcd's flags.

  ketch --version
    Print the version (the first line is the etcd version served).

  ketch -h | --help
    Print this help.

  ketch --config-file <path>
    Start from an etcd YAML configuration file; other flags and ETCD_* variables are then ignored.
"
    .to_string()
}

pub fn flag_list() -> String {
    let mut text = String::new();
    for section in Section::ALL {
        let _ = writeln!(text, "\n{}:", section.title());
        for flag in FLAGS.iter().filter(|f| f.section == section) {
            let default = if flag.name == "data-dir" {
                "${name}.etcd"
            } else {
                flag.default
            };
            let _ = writeln!(text, "  --{} '{default}'", flag.name);
            let _ = writeln!(text, "    {}", flag.help);
        }
    }
    text.push_str(
        "\nEvery flag can also be set with an environment variable named ETCD_ and the flag's name in
upper case with '-' as '_' (ETCD_INITIAL_CLUSTER for --initial-cluster); a flag on the command
line must not also be set that way.
",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let text = flag_list();
        for flag in FLAGS {
            assert!(
                text.contains(&format!("  --{} '", flag.name)),
                "--{}",
                flag.name
            );
        }
        assert!(text.contains("  --heartbeat-interval '100'"));
        assert!(text.contains("  --data-dir '${name}.etcd'"));
        assert!(usage().contains("ketch --config-file"));
    }
}
