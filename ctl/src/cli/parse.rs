//! Turning argv into a command, its flags and its arguments the way cobra and pflag do:
//! sub-command lookup with unique-prefix matching over arguments that may have flags mixed in,
//! "unknown command" errors with suggestions, then GNU-style flag parsing (`--flag=v`,
//! `--flag v`, `-w json`, `-wjson`, boolean flags without value, `--` ending flags) with pflag's
//! error texts. Arguments stay bytes: keys and values need not be UTF-8.

use super::flags::FlagSet;
use super::spec::{Command, FlagKind, FlagSpec};
use crate::gofmt;

/// A command found in the tree, with everything needed to run it or print its usage.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// From the root to the command.
    pub path: Vec<&'a Command>,
    pub flags: FlagSet,
    /// Positional arguments, flags removed.
    pub args: Vec<Vec<u8>>,
}

impl<'a> Invocation<'a> {
    pub fn command(&self) -> &'a Command {
        self.path[self.path.len() - 1]
    }
}

/// What parsing the command line led to.
#[derive(Debug)]
pub enum Parsed<'a> {
    Run(Invocation<'a>),
    /// `--help`, or a command that only groups sub-commands.
    Help(Invocation<'a>),
}

#[derive(Debug)]
pub enum ParseError<'a> {
    /// cobra's `Find` failed: an unknown command under the root.
    UnknownCommand { message: String },
    /// pflag rejected a flag; the usage of `invocation`'s command goes with the message.
    Flag {
        invocation: Invocation<'a>,
        message: String,
    },
}

/// The help flag cobra gives every command it executes.
pub fn help_flag(cmd: &Command) -> FlagSpec {
    FlagSpec {
        name: "help",
        shorthand: Some(b'h'),
        kind: FlagKind::Bool,
        default: "false",
        usage: format!("help for {}", cmd.name()).into(),
    }
}

/// The flags a command sees during lookup: its own and its ancestors' persistent ones (cobra
/// only adds `--help` when it executes the command).
pub fn lookup_flags(path: &[&Command]) -> FlagSet {
    let mut fs = FlagSet::default();
    let (cmd, ancestors) = path.split_last().expect("path has a root");
    for spec in cmd.flags.iter().chain(&cmd.persistent) {
        fs.add(spec, true);
    }
    for parent in ancestors.iter().rev() {
        for spec in &parent.persistent {
            fs.add(spec, false);
        }
    }
    fs
}

/// The flags of a command being executed: as in lookup, plus `-h, --help`.
pub fn command_flags(path: &[&Command]) -> FlagSet {
    let mut fs = lookup_flags(path);
    fs.add(&help_flag(path[path.len() - 1]), true);
    fs
}

/// cobra's `stripFlags`: the words that are not flags or flag values. A flag not defined here
/// is assumed to take a value.
fn strip_flags(args: &[Vec<u8>], flags: &FlagSet) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        i += 1;
        let has_eq = s.contains(&b'=');
        if s.as_slice() == b"--" {
            break;
        }
        let long_with_value = s.starts_with(b"--") && !has_eq && !is_bool_flag(&s[2..], flags);
        let short_with_value = s.len() == 2
            && s[0] == b'-'
            && !has_eq
            && flags
                .lookup_shorthand(s[1])
                .is_none_or(|f| f.no_opt_default().is_none());
        if long_with_value || short_with_value {
            if args.len() - i <= 1 {
                break;
            }
            i += 1;
            continue;
        }
        if !s.is_empty() && s[0] != b'-' {
            words.push(s.clone());
        }
    }
    words
}

fn is_bool_flag(name: &[u8], flags: &FlagSet) -> bool {
    std::str::from_utf8(name)
        .ok()
        .and_then(|n| flags.lookup(n))
        .is_some_and(|f| f.no_opt_default().is_some())
}

/// cobra's `findNext`: an exact name, else the only command the word is a prefix of.
fn find_next<'a>(cmd: &'a Command, word: &[u8]) -> Option<&'a Command> {
    let mut matches = Vec::new();
    for child in &cmd.children {
        if child.name().as_bytes() == word {
            return Some(child);
        }
        if child.name().as_bytes().starts_with(word) {
            matches.push(child);
        }
    }
    (matches.len() == 1).then(|| matches[0])
}

/// cobra's `argsMinusFirstX`.
fn args_minus_first(args: &[Vec<u8>], word: &[u8]) -> Vec<Vec<u8>> {
    let mut out = args.to_vec();
    if let Some(i) = out.iter().position(|a| a.as_slice() == word) {
        out.remove(i);
    }
    out
}

/// cobra's `Find`: walk down the tree by the non-flag words.
pub fn find<'a>(
    root: &'a Command,
    args: &[Vec<u8>],
) -> Result<(Vec<&'a Command>, Vec<Vec<u8>>), ParseError<'a>> {
    let mut path = vec![root];
    let mut rest = args.to_vec();
    loop {
        let cmd = path[path.len() - 1];
        let words = strip_flags(&rest, &lookup_flags(&path));
        let Some(word) = words.first() else { break };
        match find_next(cmd, word) {
            Some(child) => {
                rest = args_minus_first(&rest, word);
                path.push(child);
            }
            None => break,
        }
    }
    // cobra's legacyArgs: only the root rejects a word it cannot place.
    if path.len() == 1 && !root.children.is_empty() {
        if let Some(word) = strip_flags(&rest, &lookup_flags(&path)).first() {
            let message = format!(
                "unknown command {} for {}{}",
                gofmt::quote(word),
                gofmt::quote(root.name().as_bytes()),
                suggestions(root, word)
            );
            return Err(ParseError::UnknownCommand { message });
        }
    }
    Ok((path, rest))
}

/// cobra's "Did you mean this?" block: commands within edit distance 2 or with the word as a
/// prefix, in registration order.
fn suggestions(cmd: &Command, word: &[u8]) -> String {
    let typed = String::from_utf8_lossy(word).to_lowercase();
    let found: Vec<&str> = cmd
        .children
        .iter()
        .map(|c| c.name())
        .filter(|name| {
            levenshtein(typed.as_bytes(), name.to_lowercase().as_bytes()) <= 2
                || name.to_lowercase().starts_with(&typed)
        })
        .collect();
    if found.is_empty() {
        return String::new();
    }
    let mut s = "\n\nDid you mean this?\n".to_string();
    for name in found {
        s.push('\t');
        s.push_str(name);
        s.push('\n');
    }
    s
}

fn levenshtein(s: &[u8], t: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=t.len()).collect();
    for i in 1..=s.len() {
        let mut cur = vec![i; t.len() + 1];
        for j in 1..=t.len() {
            cur[j] = if s[i - 1] == t[j - 1] {
                prev[j - 1]
            } else {
                1 + prev[j].min(cur[j - 1]).min(prev[j - 1])
            };
        }
        prev = cur;
    }
    prev[t.len()]
}

/// Find the command, then parse its flags: cobra's `ExecuteC` up to running the command.
pub fn parse<'a>(root: &'a Command, args: &[Vec<u8>]) -> Result<Parsed<'a>, ParseError<'a>> {
    let (path, rest) = find(root, args)?;
    let mut flags = command_flags(&path);
    let positional = match parse_flags(&rest, &mut flags) {
        Ok(p) => p,
        Err(message) => {
            return Err(ParseError::Flag {
                invocation: Invocation {
                    path,
                    flags,
                    args: Vec::new(),
                },
                message,
            })
        }
    };
    let invocation = Invocation {
        path,
        flags,
        args: positional,
    };
    if invocation.flags.bool("help") || !invocation.command().runnable() {
        return Ok(Parsed::Help(invocation));
    }
    Ok(Parsed::Run(invocation))
}

/// pflag's `parseArgs` with interspersed flags; returns the positional arguments.
pub fn parse_flags(args: &[Vec<u8>], flags: &mut FlagSet) -> Result<Vec<Vec<u8>>, String> {
    let mut positional = Vec::new();
    let mut rest: &[Vec<u8>] = args;
    while let Some((s, tail)) = rest.split_first() {
        rest = tail;
        if s.len() < 2 || s[0] != b'-' {
            positional.push(s.clone());
            continue;
        }
        if s[1] == b'-' {
            if s.len() == 2 {
                positional.extend(rest.iter().cloned());
                break;
            }
            rest = parse_long(s, rest, flags)?;
        } else {
            rest = parse_short(s, rest, flags)?;
        }
    }
    Ok(positional)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_long<'r>(
    s: &[u8],
    rest: &'r [Vec<u8>],
    flags: &mut FlagSet,
) -> Result<&'r [Vec<u8>], String> {
    let body = &s[2..];
    if body.is_empty() || body[0] == b'-' || body[0] == b'=' {
        return Err(format!("bad flag syntax: {}", lossy(s)));
    }
    let (name, inline) = match body.iter().position(|&b| b == b'=') {
        Some(i) => (lossy(&body[..i]), Some(lossy(&body[i + 1..]))),
        None => (lossy(body), None),
    };
    let Some(flag) = flags.lookup(&name) else {
        return Err(format!("unknown flag: --{name}"));
    };
    let (value, rest) = match (inline, flag.no_opt_default(), rest.split_first()) {
        (Some(v), _, _) => (v, rest),
        (None, Some(d), _) => (d.to_string(), rest),
        (None, None, Some((v, tail))) => (lossy(v), tail),
        (None, None, None) => return Err(format!("flag needs an argument: {}", lossy(s))),
    };
    flags.set(&name, &value)?;
    Ok(rest)
}

fn parse_short<'r>(
    s: &[u8],
    rest: &'r [Vec<u8>],
    flags: &mut FlagSet,
) -> Result<&'r [Vec<u8>], String> {
    let mut shorthands: &[u8] = &s[1..];
    // pflag hands every letter of a cluster the original remaining arguments.
    let mut out = rest;
    while !shorthands.is_empty() {
        let (next, consumed) = parse_single_short(shorthands, rest, flags)?;
        shorthands = next;
        out = consumed;
    }
    Ok(out)
}

fn parse_single_short<'s, 'r>(
    shorthands: &'s [u8],
    rest: &'r [Vec<u8>],
    flags: &mut FlagSet,
) -> Result<(&'s [u8], &'r [Vec<u8>]), String> {
    if shorthands.starts_with(b"test.") {
        return Ok((&[], rest));
    }
    let c = shorthands[0];
    let Some(flag) = flags.lookup_shorthand(c) else {
        return Err(format!(
            "unknown shorthand flag: {} in -{}",
            gofmt::quote_rune(char::from(c)),
            lossy(shorthands)
        ));
    };
    let name = flag.spec.name;
    let (value, next, rest) = if shorthands.len() > 2 && shorthands[1] == b'=' {
        (lossy(&shorthands[2..]), &shorthands[..0], rest)
    } else if let Some(d) = flag.no_opt_default() {
        (d.to_string(), &shorthands[1..], rest)
    } else if shorthands.len() > 1 {
        (lossy(&shorthands[1..]), &shorthands[..0], rest)
    } else if let Some((v, tail)) = rest.split_first() {
        (lossy(v), &shorthands[1..], tail)
    } else {
        return Err(format!(
            "flag needs an argument: {} in -{}",
            gofmt::quote_rune(char::from(c)),
            lossy(shorthands)
        ));
    };
    flags.set(name, &value)?;
    Ok((next, rest))
}

#[cfg(test)]
mod tests {
    use super::super::spec::{root, Action};
    use super::*;

    fn argv(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn run<'a>(root: &'a Command, s: &[&str]) -> Invocation<'a> {
        match parse(root, &argv(s)) {
            Ok(Parsed::Run(inv)) => inv,
            other => panic!("expected a runnable command, got {other:?}"),
        }
    }

    #[test]
    fn flags_anywhere_and_prefix_matching() {
        let root = root();
        let inv = run(
            &root,
            &["--endpoints", "a:1", "ge", "foo", "--prefix", "-w", "json"],
        );
        assert_eq!(inv.command().action, Some(Action::Get));
        assert_eq!(inv.args, argv(&["foo"]));
        assert!(inv.flags.bool("prefix"));
        assert_eq!(inv.flags.string("write-out"), "json");
        assert_eq!(inv.flags.strings("endpoints"), vec!["a:1"]);

        let inv = run(&root, &["member", "l"]);
        assert_eq!(inv.command().action, Some(Action::MemberList));

        let inv = run(&root, &["put", "--", "-k", "-v"]);
        assert_eq!(inv.args, argv(&["-k", "-v"]));

        let inv = run(&root, &["-wjson", "put", "k", "--lease=1a"]);
        assert_eq!(inv.flags.string("write-out"), "json");
        assert_eq!(inv.flags.string("lease"), "1a");
    }

    #[test]
    fn unknown_commands_get_suggestions() {
        let root = root();
        let Err(ParseError::UnknownCommand { message, .. }) = parse(&root, &argv(&["gett"])) else {
            panic!("expected an unknown command");
        };
        assert_eq!(
            message,
            "unknown command \"gett\" for \"etcdctl\"\n\nDid you mean this?\n\tget\n"
        );
        let Err(ParseError::UnknownCommand { message, .. }) = parse(&root, &argv(&["m"])) else {
            panic!("expected an unknown command");
        };
        assert_eq!(
            message,
            "unknown command \"m\" for \"etcdctl\"\n\nDid you mean this?\n\tmove-leader\n\tmember\n\tmake-mirror\n\tmigrate\n"
        );
        // An unknown flag swallows the next word as its value.
        let Err(ParseError::UnknownCommand { message, .. }) =
            parse(&root, &argv(&["--bogus", "get", "foo"]))
        else {
            panic!("expected an unknown command");
        };
        assert_eq!(message, "unknown command \"foo\" for \"etcdctl\"");
    }

    #[test]
    fn flag_errors_read_like_pflag() {
        let root = root();
        let err = |s: &[&str]| match parse(&root, &argv(s)) {
            Err(ParseError::Flag { message, .. }) => message,
            other => panic!("expected a flag error, got {other:?}"),
        };
        assert_eq!(err(&["get", "--bogus", "foo"]), "unknown flag: --bogus");
        assert_eq!(err(&["get", "-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(err(&["get", "-w"]), "flag needs an argument: 'w' in -w");
        assert_eq!(err(&["get", "--limit"]), "flag needs an argument: --limit");
        assert_eq!(err(&["get", "---x"]), "bad flag syntax: ---x");
        assert_eq!(
            err(&["get", "--prefix=maybe", "a"]),
            "invalid argument \"maybe\" for \"--prefix\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
    }

    #[test]
    fn groups_and_help_flag_ask_for_help() {
        let root = root();
        assert!(matches!(
            parse(&root, &argv(&["member"])),
            Ok(Parsed::Help(_))
        ));
        assert!(matches!(
            parse(&root, &argv(&["member", "bogus"])),
            Ok(Parsed::Help(_))
        ));
        assert!(matches!(
            parse(&root, &argv(&["get", "-h"])),
            Ok(Parsed::Help(_))
        ));
        assert!(matches!(parse(&root, &argv(&[])), Ok(Parsed::Help(_))));
    }
}
