//! Usage text. [`etcdctl_usage`] renders etcdctl's own template (NAME, USAGE, COMMANDS,
//! DESCRIPTION, OPTIONS, GLOBAL OPTIONS, aligned with tabs); [`cobra_usage`] renders cobra's
//! default one, which etcdctl shows on stderr when a txn request line has a bad flag.

use super::flags::{Flag, FlagSet};
use super::spec::{Command, FlagKind};
use super::tabwriter;
use crate::gofmt;

/// The etcd version etcdctl reports, and its API version (major.minor).
pub fn versions() -> (&'static str, String) {
    let version = ketch_api::ETCD_SERVER_VERSION;
    let api: Vec<&str> = version.split('.').take(2).collect();
    (version, api.join("."))
}

/// cobra's `CommandPath`: the names from the root down.
fn command_path(path: &[&Command]) -> String {
    path.iter()
        .map(|c| c.name())
        .filter(|n| !n.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// cobra's `UseLine`: the parent's path, this command's `Use`, and `[flags]`.
fn use_line(path: &[&Command]) -> String {
    let cmd = path[path.len() - 1];
    let mut line = if path.len() > 1 {
        format!("{} {}", command_path(&path[..path.len() - 1]), cmd.use_line)
    } else {
        cmd.use_line.to_string()
    };
    if !line.contains("[flags]") {
        line.push_str(" [flags]");
    }
    line
}

/// Sub-commands in name order, each followed by its own (cobra sorts `Commands()`).
fn flattened_children<'a>(cmd: &'a Command, prefix: &str, out: &mut Vec<(String, &'a Command)>) {
    let mut children: Vec<&Command> = cmd.children.iter().collect();
    children.sort_by_key(|c| c.name());
    for child in children {
        let name = if prefix.is_empty() {
            child.name().to_string()
        } else {
            format!("{prefix} {}", child.name())
        };
        out.push((name.clone(), child));
        flattened_children(child, &name, out);
    }
}

/// etcdctl's flag listing: `  -w, --write-out="simple"\tset the output format ...`.
fn etcd_flag_usages<'f>(flags: impl Iterator<Item = &'f Flag>) -> String {
    let mut s = String::new();
    for f in flags {
        match f.spec.shorthand {
            Some(c) => s.push_str(&format!("  -{}, --{}", c as char, f.spec.name)),
            None => s.push_str(&format!("      --{}", f.spec.name)),
        }
        let bracket = f.no_opt_default().is_some();
        if bracket {
            s.push('[');
        }
        if f.spec.kind == FlagKind::String {
            s.push('=');
            s.push_str(&gofmt::quote(f.spec.default.as_bytes()));
        } else {
            s.push('=');
            s.push_str(f.spec.default);
        }
        if bracket {
            s.push(']');
        }
        s.push('\t');
        s.push_str(&f.spec.usage);
        s.push('\n');
    }
    s
}

/// The usage etcdctl prints for `path` (a command and its ancestors) with its flags.
pub fn etcdctl_usage(path: &[&Command], flags: &FlagSet) -> String {
    let cmd = path[path.len() - 1];
    let is_root = path.len() == 1;
    let (version, api_version) = versions();
    let mut t = String::new();
    t.push_str("NAME:\n");
    if is_root {
        t.push_str(&format!("\t{} - {}\n", cmd.name(), cmd.short));
    } else {
        t.push_str(&format!("\t{} - {}\n", command_path(&path[1..]), cmd.short));
    }
    t.push_str(&format!("\nUSAGE:\n\t{}\n", use_line(path)));
    if is_root {
        t.push_str(&format!("\nVERSION:\n\t{version}\n"));
    }
    if !cmd.children.is_empty() {
        t.push_str(&format!("\nAPI VERSION:\n\t{api_version}\n"));
        t.push_str("\n\nCOMMANDS:\n");
        let mut subs = Vec::new();
        flattened_children(cmd, "", &mut subs);
        for (name, sub) in subs {
            if sub.runnable() {
                t.push_str(&format!("\t{name}\t{}\n", sub.short));
            }
        }
    }
    if !cmd.long.is_empty() {
        t.push_str("\nDESCRIPTION:\n");
        for line in cmd.long.trim_matches(['\n', '\t', ' ']).split('\n') {
            t.push_str(&format!("\t{line}\n"));
        }
    }
    let local: Vec<&Flag> = flags.iter().filter(|f| f.local).collect();
    if !local.is_empty() {
        t.push_str("\nOPTIONS:\n");
        t.push_str(&etcd_flag_usages(local.into_iter()));
    }
    let inherited: Vec<&Flag> = flags.iter().filter(|f| !f.local).collect();
    if !inherited.is_empty() {
        t.push_str("\nGLOBAL OPTIONS:\n");
        t.push_str(&etcd_flag_usages(inherited.into_iter()));
    }
    t.push('\n');
    tabwriter::align(&t)
}

/// pflag's `FlagUsages`: `      --lease string   lease ID ... (default "0")`, aligned.
fn pflag_usages<'f>(flags: impl Iterator<Item = &'f Flag>) -> String {
    let mut lines = Vec::new();
    let mut maxlen = 0;
    for f in flags {
        let mut line = match f.spec.shorthand {
            Some(c) => format!("  -{}, --{}", c as char, f.spec.name),
            None => format!("      --{}", f.spec.name),
        };
        let type_name = match f.spec.kind {
            FlagKind::Bool => "",
            FlagKind::String => "string",
            FlagKind::Int64 => "int",
            FlagKind::Duration => "duration",
            FlagKind::StringSlice => "strings",
        };
        if !type_name.is_empty() {
            line.push(' ');
            line.push_str(type_name);
        }
        // Column where usage starts: one past the longest name part.
        let sidx = line.len();
        maxlen = maxlen.max(sidx + 1);
        let mut usage = f.spec.usage.to_string();
        if !f.default_is_zero() {
            if f.spec.kind == FlagKind::String {
                usage.push_str(&format!(
                    " (default {})",
                    gofmt::quote(f.spec.default.as_bytes())
                ));
            } else {
                usage.push_str(&format!(" (default {})", f.spec.default));
            }
        }
        lines.push((line, usage));
    }
    let mut s = String::new();
    for (line, usage) in lines {
        let spacing = " ".repeat(maxlen - line.len());
        s.push_str(&format!("{line} {spacing} {usage}\n"));
    }
    s
}

/// cobra's default usage template for a runnable command without sub-commands.
pub fn cobra_usage(path: &[&Command], flags: &FlagSet) -> String {
    let mut s = format!("Usage:\n  {}", use_line_unnamed_root(path));
    let local: Vec<&Flag> = flags.iter().filter(|f| f.local).collect();
    if !local.is_empty() {
        s.push_str("\n\nFlags:\n");
        s.push_str(pflag_usages(local.into_iter()).trim_end());
    }
    let inherited: Vec<&Flag> = flags.iter().filter(|f| !f.local).collect();
    if !inherited.is_empty() {
        s.push_str("\n\nGlobal Flags:\n");
        s.push_str(pflag_usages(inherited.into_iter()).trim_end());
    }
    s.push('\n');
    s
}

/// `UseLine` under a root without a name: cobra still joins with a space (` put [options]`).
fn use_line_unnamed_root(path: &[&Command]) -> String {
    let cmd = path[path.len() - 1];
    let parent: Vec<&str> = path[..path.len() - 1].iter().map(|c| c.name()).collect();
    let mut line = format!("{} {}", parent.join(" "), cmd.use_line);
    if !line.contains("[flags]") {
        line.push_str(" [flags]");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::super::parse::command_flags;
    use super::super::spec::{put_command, root, txn_request_root};
    use super::*;

    #[test]
    fn txn_request_usage_matches_cobra() {
        let root = txn_request_root();
        let put = &root.children[0];
        let path = vec![&root, put];
        let text = cobra_usage(&path, &command_flags(&path));
        assert_eq!(
            text,
            "Usage:\n   put [options] <key> <value> (<value> can also be given from stdin) [flags]\n\nFlags:\n  -h, --help           help for put\n      --ignore-lease   updates the key using its current lease\n      --ignore-value   updates the key using its current value\n      --lease string   lease ID (in hexadecimal) to attach to the key (default \"0\")\n      --prev-kv        return the previous key-value pair before modification\n"
        );
        let _ = put_command();
    }

    #[test]
    fn member_usage_lists_sub_commands_and_globals() {
        let root = root();
        let member = root.children.iter().find(|c| c.name() == "member").unwrap();
        let path = vec![&root, member];
        let text = etcdctl_usage(&path, &command_flags(&path));
        assert!(text.starts_with(
            "NAME:\n\tmember - Membership related commands\n\nUSAGE:\n\tetcdctl member <subcommand> [flags]\n\nAPI VERSION:\n\t3.4\n\n\nCOMMANDS:\n\tadd\tAdds a member into the cluster\n\tlist\tLists all members in the cluster\n"
        ));
        assert!(text.contains("\nOPTIONS:\n  -h, --help[=false]\thelp for member\n\nGLOBAL OPTIONS:\n      --cacert=\"\"\t\t\t\tverify"));
        assert!(text.ends_with("set the output format (fields, json, protobuf, simple, table)\n\n"));
    }
}
