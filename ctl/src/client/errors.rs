//! RPC errors as clientv3 hands them to etcdctl: a gRPC status whose message is one of etcd's
//! own errors becomes that message alone (`etcdserver: ...`), any other status reads
//! `rpc error: code = <Code> desc = <message>`, and a call cut off by its deadline reads
//! `context deadline exceeded`.

use ketch_api::status::EtcdError;
use tonic::{Code, Status};

/// The errors clientv3's `rpctypes` recognises by message (its `errStringToError`).
const KNOWN: &[EtcdError] = {
    use EtcdError::*;
    &[
        EmptyKey,
        KeyNotFound,
        ValueProvided,
        LeaseProvided,
        TooManyOps,
        DuplicateKey,
        Compacted,
        FutureRev,
        NoSpace,
        LeaseNotFound,
        LeaseExist,
        LeaseTtlTooLarge,
        MemberExist,
        PeerUrlExist,
        MemberNotEnoughStarted,
        MemberBadUrls,
        MemberNotFound,
        MemberNotLearner,
        LearnerNotReady,
        TooManyLearners,
        RequestTooLarge,
        TooManyRequests,
        RootUserNotExist,
        RootRoleNotExist,
        UserAlreadyExist,
        UserEmpty,
        UserNotFound,
        RoleAlreadyExist,
        RoleNotFound,
        RoleEmpty,
        AuthFailed,
        PermissionDenied,
        RoleNotGranted,
        PermissionNotGranted,
        AuthNotEnabled,
        InvalidAuthToken,
        InvalidAuthMgmt,
        AuthOldRevision,
        NoLeader,
        NotLeader,
        LeaderChanged,
        NotCapable,
        Stopped,
        Timeout,
        TimeoutDueToLeaderFail,
        TimeoutDueToConnectionLost,
        TimeoutWaitAppliedIndex,
        Unhealthy,
        Corrupt,
        NotSupportedForLearner,
        BadLeaderTransferee,
    ]
};

/// grpc-go's name for a status code (`codes.Code.String()`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// grpc-go's `status.Error(...).Error()`.
pub fn grpc_error_text(code: Code, message: &str) -> String {
    format!("rpc error: code = {} desc = {}", code_name(code), message)
}

/// A failed call, as etcdctl sees it after clientv3's conversions.
#[derive(Debug, Clone)]
pub enum RpcError {
    /// The server (or transport) answered with a status.
    Status { code: Code, message: String },
    /// The caller's deadline passed first.
    DeadlineExceeded,
}

impl RpcError {
    pub fn from_status(status: &Status) -> Self {
        RpcError::Status {
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The etcd error this is, when clientv3 would recognise it.
    pub fn etcd_error(&self) -> Option<EtcdError> {
        match self {
            RpcError::Status { message, .. } => {
                KNOWN.iter().find(|e| e.to_string() == *message).cloned()
            }
            RpcError::DeadlineExceeded => None,
        }
    }

    pub fn is(&self, e: &EtcdError) -> bool {
        self.etcd_error().as_ref() == Some(e)
    }

    pub fn code(&self) -> Code {
        match self {
            RpcError::Status { code, .. } => *code,
            RpcError::DeadlineExceeded => Code::DeadlineExceeded,
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::DeadlineExceeded => f.write_str("context deadline exceeded"),
            RpcError::Status { code, message } => match self.etcd_error() {
                Some(_) => f.write_str(message),
                None => f.write_str(&grpc_error_text(*code, message)),
            },
        }
    }
}

/// Go's text for an OS error from `connect`: strerror in lower case, without Rust's
/// `(os error N)` suffix.
pub fn os_error_text(e: &std::io::Error) -> String {
    let known = match e.raw_os_error() {
        Some(111) => Some("connection refused"),
        Some(2) => Some("no such file or directory"),
        Some(110) => Some("connection timed out"),
        Some(113) => Some("no route to host"),
        Some(101) => Some("network is unreachable"),
        Some(13) => Some("permission denied"),
        Some(104) => Some("connection reset by peer"),
        Some(99) => Some("cannot assign requested address"),
        _ => None,
    };
    if let Some(text) = known {
        return text.to_string();
    }
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_messages_pass_through_alone() {
        let e = RpcError::from_status(&Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert_eq!(
            e.to_string(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        assert!(e.is(&EtcdError::Compacted));
        let e = RpcError::from_status(&Status::unavailable("transport is closing"));
        assert_eq!(
            e.to_string(),
            "rpc error: code = Unavailable desc = transport is closing"
        );
        assert_eq!(
            RpcError::DeadlineExceeded.to_string(),
            "context deadline exceeded"
        );
    }

    #[test]
    fn os_errors_read_like_go() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(os_error_text(&e), "connection refused");
    }
}
