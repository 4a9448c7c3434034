//! The command tree: every command etcdctl 3.4 has, with its `Use` line, one-line summary and
//! flags, in etcdctl's registration order (which is the order cobra matches prefixes and
//! suggests corrections in). Commands this round implements carry an [`Action`]; the others are
//! listed so help, prefix matching and suggestions behave as etcdctl's do, and fail with a
//! clear "not implemented" message when run.

use std::borrow::Cow;

/// The type of a flag's value, as pflag names it in usage text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    String,
    Int64,
    Duration,
    StringSlice,
}

#[derive(Clone, Debug)]
pub struct FlagSpec {
    pub name: &'static str,
    pub shorthand: Option<u8>,
    pub kind: FlagKind,
    /// pflag's `DefValue`: the default as the flag prints it (`2s`, `[127.0.0.1:2379]`).
    pub default: &'static str,
    /// Owned only for `--help`, whose text names its command.
    pub usage: Cow<'static, str>,
}

const fn flag(
    name: &'static str,
    kind: FlagKind,
    default: &'static str,
    usage: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        shorthand: None,
        kind,
        default,
        usage: Cow::Borrowed(usage),
    }
}

const fn short_flag(
    name: &'static str,
    shorthand: u8,
    kind: FlagKind,
    default: &'static str,
    usage: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        shorthand: Some(shorthand),
        kind,
        default,
        usage: Cow::Borrowed(usage),
    }
}

/// What running a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Get,
    Put,
    Del,
    Txn,
    Compaction,
    MemberList,
    EndpointHealth,
    EndpointStatus,
    EndpointHashKv,
    Version,
    Help,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseList,
    LeaseKeepAlive,
    Lock,
    Elect,
    Watch,
    /// An etcdctl command ketchctl does not implement yet.
    NotImplemented,
}

#[derive(Clone, Debug)]
pub struct Command {
    /// cobra's `Use`: the name, then the argument synopsis.
    pub use_line: &'static str,
    pub short: &'static str,
    pub long: &'static str,
    /// Flags of this command only.
    pub flags: Vec<FlagSpec>,
    /// Flags of this command that its sub-commands inherit.
    pub persistent: Vec<FlagSpec>,
    pub children: Vec<Command>,
    /// `None` for a group that only holds sub-commands (cobra: not runnable).
    pub action: Option<Action>,
}

impl Command {
    fn new(use_line: &'static str, short: &'static str, action: Option<Action>) -> Self {
        Command {
            use_line,
            short,
            long: "",
            flags: Vec::new(),
            persistent: Vec::new(),
            children: Vec::new(),
            action,
        }
    }

    fn run(use_line: &'static str, short: &'static str, action: Action) -> Self {
        Self::new(use_line, short, Some(action))
    }

    fn todo(use_line: &'static str, short: &'static str) -> Self {
        Self::new(use_line, short, Some(Action::NotImplemented))
    }

    fn group(use_line: &'static str, short: &'static str, children: Vec<Command>) -> Self {
        Command {
            children,
            ..Self::new(use_line, short, None)
        }
    }

    fn long(mut self, long: &'static str) -> Self {
        self.long = long;
        self
    }

    fn flags(mut self, flags: Vec<FlagSpec>) -> Self {
        self.flags = flags;
        self
    }

    fn persistent(mut self, flags: Vec<FlagSpec>) -> Self {
        self.persistent = flags;
        self
    }

    /// The first word of `Use`.
    pub fn name(&self) -> &'static str {
        self.use_line.split(' ').next().unwrap_or("")
    }

    pub fn runnable(&self) -> bool {
        self.action.is_some()
    }
}

/// The name etcdctl prints for itself in usage and errors; ketchctl keeps it so its output is
/// byte-identical.
pub const ROOT_NAME: &str = "etcdctl";

use FlagKind::*;

/// etcdctl's global flags.
fn global_flags() -> Vec<FlagSpec> {
    vec![
        flag("endpoints", StringSlice, "[127.0.0.1:2379]", "gRPC endpoints"),
        flag("debug", Bool, "false", "enable client-side debug logging"),
        short_flag(
            "write-out",
            b'w',
            String,
            "simple",
            "set the output format (fields, json, protobuf, simple, table)",
        ),
        flag("hex", Bool, "false", "print byte strings as hex encoded strings"),
        flag("dial-timeout", Duration, "2s", "dial timeout for client connections"),
        flag(
            "command-timeout",
            Duration,
            "5s",
            "timeout for short running command (excluding dial timeout)",
        ),
        flag("keepalive-time", Duration, "2s", "keepalive time for client connections"),
        flag("keepalive-timeout", Duration, "6s", "keepalive timeout for client connections"),
        flag("insecure-transport", Bool, "true", "disable transport security for client connections"),
        flag(
            "insecure-discovery",
            Bool,
            "true",
            "accept insecure SRV records describing cluster endpoints",
        ),
        flag(
            "insecure-skip-tls-verify",
            Bool,
            "false",
            "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)",
        ),
        flag("cert", String, "", "identify secure client using this TLS certificate file"),
        flag("key", String, "", "identify secure client using this TLS key file"),
        flag(
            "cacert",
            String,
            "",
            "verify certificates of TLS-enabled secure servers using this CA bundle",
        ),
        flag(
            "user",
            String,
            "",
            "username[:password] for authentication (prompt if password is not supplied)",
        ),
        flag(
            "password",
            String,
            "",
            "password for authentication (if this option is used, --user option shouldn't include password)",
        ),
        short_flag(
            "discovery-srv",
            b'd',
            String,
            "",
            "domain name to query for SRV records describing cluster endpoints",
        ),
        flag("discovery-srv-name", String, "", "service name to query when using DNS discovery"),
    ]
}

pub fn get_command() -> Command {
    Command::run(
        "get [options] <key> [range_end]",
        "Gets the key or a range of keys",
        Action::Get,
    )
    .flags(vec![
        flag(
            "consistency",
            String,
            "l",
            "Linearizable(l) or Serializable(s)",
        ),
        flag(
            "order",
            String,
            "",
            "Order of results; ASCEND or DESCEND (ASCEND by default)",
        ),
        flag(
            "sort-by",
            String,
            "",
            "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION",
        ),
        flag("limit", Int64, "0", "Maximum number of results"),
        flag("prefix", Bool, "false", "Get keys with matching prefix"),
        flag(
            "from-key",
            Bool,
            "false",
            "Get keys that are greater than or equal to the given key using byte compare",
        ),
        flag("rev", Int64, "0", "Specify the kv revision"),
        flag("keys-only", Bool, "false", "Get only the keys"),
        flag(
            "print-value-only",
            Bool,
            "false",
            "Only write values when using the \"simple\" output format",
        ),
    ])
}

pub fn put_command() -> Command {
    Command::run(
        "put [options] <key> <value> (<value> can also be given from stdin)",
        "Puts the given key into the store",
        Action::Put,
    )
    .long(PUT_LONG)
    .flags(vec![
        flag(
            "lease",
            String,
            "0",
            "lease ID (in hexadecimal) to attach to the key",
        ),
        flag(
            "prev-kv",
            Bool,
            "false",
            "return the previous key-value pair before modification",
        ),
        flag(
            "ignore-value",
            Bool,
            "false",
            "updates the key using its current value",
        ),
        flag(
            "ignore-lease",
            Bool,
            "false",
            "updates the key using its current lease",
        ),
    ])
}

/// `put`'s description, as `etcdctl put --help` shows it.
const PUT_LONG: &str = "
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
";

pub fn del_command() -> Command {
    Command::run(
        "del [options] <key> [range_end]",
        "Removes the specified key or range of keys [key, range_end)",
        Action::Del,
    )
    .flags(vec![
        flag("prefix", Bool, "false", "delete keys with matching prefix"),
        flag("prev-kv", Bool, "false", "return deleted key-value pairs"),
        flag(
            "from-key",
            Bool,
            "false",
            "delete keys that are greater than or equal to the given key using byte compare",
        ),
    ])
}

fn txn_command() -> Command {
    Command::run(
        "txn [options]",
        "Txn processes all the requests in one transaction",
        Action::Txn,
    )
    .flags(vec![short_flag(
        "interactive",
        b'i',
        Bool,
        "false",
        "Input transaction in interactive mode",
    )])
}

fn compaction_command() -> Command {
    Command::run(
        "compaction [options] <revision>",
        "Compacts the event history in etcd",
        Action::Compaction,
    )
    .flags(vec![flag(
        "physical",
        Bool,
        "false",
        "'true' to wait for compaction to physically remove all old revisions",
    )])
}

fn endpoint_command() -> Command {
    Command::group(
        "endpoint <subcommand>",
        "Endpoint related commands",
        vec![
            Command::run(
                "health",
                "Checks the healthiness of endpoints specified in `--endpoints` flag",
                Action::EndpointHealth,
            ),
            Command::run(
                "status",
                "Prints out the status of endpoints specified in `--endpoints` flag",
                Action::EndpointStatus,
            )
            .long(EP_STATUS_LONG),
            Command::run(
                "hashkv",
                "Prints the KV history hash for each endpoint in --endpoints",
                Action::EndpointHashKv,
            )
            .persistent(vec![flag(
                "rev",
                Int64,
                "0",
                "maximum revision to hash (default: all revisions)",
            )]),
        ],
    )
    .persistent(vec![flag(
        "cluster",
        Bool,
        "false",
        "use all endpoints from the cluster member list",
    )])
}

const EP_STATUS_LONG: &str = "When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
The items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.
";

fn member_command() -> Command {
    Command::group(
        "member <subcommand>",
        "Membership related commands",
        vec![
            Command::todo(
                "add <memberName> [options]",
                "Adds a member into the cluster",
            ),
            Command::todo("remove <memberID>", "Removes a member from the cluster"),
            Command::todo(
                "update <memberID> [options]",
                "Updates a member in the cluster",
            ),
            Command::run(
                "list",
                "Lists all members in the cluster",
                Action::MemberList,
            )
            .long(MEMBER_LIST_LONG),
            Command::todo(
                "promote <memberID>",
                "Promotes a non-voting member in the cluster",
            ),
        ],
    )
}

const MEMBER_LIST_LONG: &str = "When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.
The items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.
";

pub fn watch_command() -> Command {
    Command::run(
        "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
        "Watches events stream on keys or prefixes",
        Action::Watch,
    )
    .flags(vec![
        short_flag("interactive", b'i', Bool, "false", "Interactive mode"),
        flag(
            "prefix",
            Bool,
            "false",
            "Watch on a prefix if prefix is set",
        ),
        flag("rev", Int64, "0", "Revision to start watching"),
        flag(
            "prev-kv",
            Bool,
            "false",
            "get the previous key-value pair before the event happens",
        ),
    ])
}

fn lease_command() -> Command {
    Command::group(
        "lease <subcommand>",
        "Lease related commands",
        vec![
            Command::run("grant <ttl>", "Creates leases", Action::LeaseGrant),
            Command::run("revoke <leaseID>", "Revokes leases", Action::LeaseRevoke),
            Command::run(
                "timetolive <leaseID> [options]",
                "Get lease information",
                Action::LeaseTimeToLive,
            )
            .flags(vec![flag(
                "keys",
                Bool,
                "false",
                "Get keys attached to this lease",
            )]),
            Command::run("list", "List all active leases", Action::LeaseList),
            Command::run(
                "keep-alive [options] <leaseID>",
                "Keeps leases alive (renew)",
                Action::LeaseKeepAlive,
            )
            .flags(vec![flag(
                "once",
                Bool,
                "false",
                "Resets the keep-alive time to its original value and exits immediately",
            )]),
        ],
    )
}

/// The whole tree, rooted at `etcdctl`.
pub fn root() -> Command {
    let todo = Command::todo;
    let group = Command::group;
    let children = vec![
        get_command(),
        put_command(),
        del_command(),
        txn_command(),
        compaction_command(),
        group(
            "alarm <subcommand>",
            "Alarm related commands",
            vec![todo("disarm", "Disarms all alarms"), todo("list", "Lists all alarms")],
        ),
        todo("defrag", "Defragments the storage of the etcd members with given endpoints"),
        endpoint_command(),
        todo("move-leader <transferee-member-id>", "Transfers leadership to another etcd cluster member."),
        watch_command(),
        Command::run("version", "Prints the version of etcdctl", Action::Version),
        lease_command(),
        member_command(),
        group(
            "snapshot <subcommand>",
            "Manages etcd node snapshots",
            vec![
                todo("save <filename>", "Stores an etcd node backend snapshot to a given file"),
                todo("status <filename>", "Gets backend snapshot status of a given file"),
                todo("restore <filename> [options]", "Restores an etcd member snapshot to an etcd directory"),
            ],
        ),
        todo("make-mirror [options] <destination>", "Makes a mirror at the destination etcd cluster"),
        todo("migrate", "Migrates keys in a v2 store to a mvcc store"),
        Command::run(
            "lock <lockname> [exec-command arg1 arg2 ...]",
            "Acquires a named lock",
            Action::Lock,
        )
        .flags(vec![flag("ttl", Int64, "10", "timeout for session")]),
        Command::run(
            "elect <election-name> [proposal]",
            "Observes and participates in leader election",
            Action::Elect,
        )
        .flags(vec![short_flag("listen", b'l', Bool, "false", "observation mode")]),
        group(
            "auth <enable or disable>",
            "Enable or disable authentication",
            vec![todo("enable", "Enables authentication"), todo("disable", "Disables authentication")],
        ),
        group(
            "user <subcommand>",
            "User related commands",
            vec![
                todo("add <user name or user:password> [options]", "Adds a new user"),
                todo("delete <user name>", "Deletes a user"),
                todo("get <user name> [options]", "Gets detailed information of a user"),
                todo("list", "Lists all users"),
                todo("passwd <user name> [options]", "Changes password of user"),
                todo("grant-role <user name> <role name>", "Grants a role to a user"),
                todo("revoke-role <user name> <role name>", "Revokes a role from a user"),
            ],
        ),
        group(
            "role <subcommand>",
            "Role related commands",
            vec![
                todo("add <role name>", "Adds a new role"),
                todo("delete <role name>", "Deletes a role"),
                todo("get <role name>", "Gets detailed information of a role"),
                todo("list", "Lists all roles"),
                todo(
                    "grant-permission [options] <role name> <permission type> <key> [endkey]",
                    "Grants a key to a role",
                ),
                todo("revoke-permission <role name> <key> [endkey]", "Revokes a key from a role"),
            ],
        ),
        group(
            "check <subcommand>",
            "commands for checking properties of the etcd cluster",
            vec![
                todo("perf [options]", "Check the performance of the etcd cluster"),
                todo(
                    "datascale [options]",
                    "Check the memory usage of holding data for different workloads on a given server endpoint.",
                ),
            ],
        ),
        help_command(),
        completion_command(),
    ];
    Command {
        children,
        persistent: global_flags(),
        ..Command::new(ROOT_NAME, "A simple command line client for etcd3.", None)
    }
}

/// cobra adds `help` to every root that has sub-commands.
fn help_command() -> Command {
    Command::run("help [command]", "Help about any command", Action::Help).long(
        "Help provides help for any command in the application.\nSimply type etcdctl help [path to command] for full details.",
    )
}

/// cobra adds `completion` to every root that has sub-commands.
fn completion_command() -> Command {
    let todo = Command::todo;
    Command::group(
        "completion",
        "Generate the autocompletion script for the specified shell",
        vec![
            todo("bash", "Generate the autocompletion script for bash"),
            todo("zsh", "Generate the autocompletion script for zsh"),
            todo("fish", "Generate the autocompletion script for fish"),
            todo("powershell", "Generate the autocompletion script for powershell"),
        ],
    )
    .long(
        "Generate the autocompletion script for etcdctl for the specified shell.\nSee each sub-command's help for details on how to use the generated script.\n",
    )
}

/// The unnamed root txn uses to parse one request line (`put ...`, `get ...`, `del ...`).
pub fn txn_request_root() -> Command {
    Command {
        children: vec![
            put_command(),
            get_command(),
            del_command(),
            help_command(),
            completion_command(),
        ],
        ..Command::new("", "", None)
    }
}
