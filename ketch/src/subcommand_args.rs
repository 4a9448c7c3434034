//! The flags of ketch's subcommands (`gateway start`, `snapshot restore`) as pflag reads them:
//! `--flag` or `-flag`, the value inline (`--flag=value`) or as the next argument.

/// One argument of a subcommand.
pub enum Arg<'a> {
    /// A flag's name, and its value when given inline.
    Flag(&'a str, Option<&'a str>),
    /// Anything that is not a flag.
    Positional(&'a str),
}

/// The arguments after the subcommand's name, read one at a time.
pub struct SubcommandArgs<'a> {
    rest: std::slice::Iter<'a, String>,
}

impl<'a> SubcommandArgs<'a> {
    pub fn new(args: &'a [String]) -> SubcommandArgs<'a> {
        SubcommandArgs { rest: args.iter() }
    }

    pub fn next_arg(&mut self) -> Option<Arg<'a>> {
        let arg = self.rest.next()?;
        Some(
            match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
                None => Arg::Positional(arg),
                Some(flag) => match flag.split_once('=') {
                    Some((name, value)) => Arg::Flag(name, Some(value)),
                    None => Arg::Flag(flag, None),
                },
            },
        )
    }

    /// The value of flag `name`: the inline one, else the next argument.
    pub fn value(&mut self, name: &str, inline: Option<&str>) -> Result<String, String> {
        inline
            .map(str::to_string)
            .or_else(|| self.rest.next().cloned())
            .ok_or_else(|| format!("flag needs an argument: --{name}"))
    }
}
