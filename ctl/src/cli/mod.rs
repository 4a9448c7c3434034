//! etcdctl's command line: the command tree ([`spec`]), flag values ([`flags`]), cobra/pflag
//! parsing ([`parse`]) and usage text ([`usage`]).

pub mod flags;
pub mod parse;
pub mod spec;
pub mod tabwriter;
pub mod usage;
