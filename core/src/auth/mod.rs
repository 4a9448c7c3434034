//! etcd's auth: users (bcrypt password hashes, roles), roles (key permissions), the enabled
//! flag and the auth revision. The state changes only when the apply thread applies an auth
//! request from the Raft log ([`AuthStore::apply_change`]); it is kept in the backend as one
//! record (`AuthState` under [`AUTH_META_KEY`], written in the applying batch, so it travels in
//! snapshots with the rest of the backend) and in memory for the checks.
//!
//! Checks follow etcd 3.4's `auth/store.go`: a request names a user and the auth revision its
//! token was checked at ([`AuthInfo`]); a revision older than the store's is refused
//! (`ErrAuthOldRevision`), the root role may do anything, other users need a permission
//! covering the key or range (`range_perm_cache.go`).

pub mod jwt;
pub mod token;

use std::collections::BTreeMap;
use std::sync::RwLock;

use ketch_api::authpb::{permission::Type as PermType, Permission, Role, User};
use ketch_api::etcdserverpb::{
    request_op, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest,
    AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest, RequestOp, TxnRequest,
};
use ketch_api::ketchpb::{raft_request::Request, AuthState, RequestHeader};
use ketch_api::status::EtcdError;
use ketch_mvcc::{Store, WriteBatch};
use prost::Message as _;
use tracing::{info, warn};

use token::SimpleTokens;

/// The backend record holding the whole auth state.
pub const AUTH_META_KEY: &str = "auth";
pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// Who a request runs as: a user name and the auth revision its credentials were checked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

#[derive(Default)]
struct State {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// per user: merged read and write intervals of all its roles (etcd's rangePermCache)
    perms: BTreeMap<String, UserPerms>,
}

/// Half-open intervals `[begin, end)`; an empty `end` is +infinity (etcd's affine bytes).
#[derive(Default)]
struct UserPerms {
    read: Vec<(Vec<u8>, Vec<u8>)>,
    write: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the auth store refuses with; etcd's error for each.
pub type AuthResult<T> = Result<T, EtcdError>;

pub struct AuthStore {
    state: RwLock<State>,
    pub tokens: SimpleTokens,
    /// `--auth-token jwt,...`: signed tokens instead of simple ones
    pub jwt: Option<jwt::JwtTokens>,
    /// `--bcrypt-cost`
    pub bcrypt_cost: u32,
}

impl AuthStore {
    pub fn new(
        token_ttl: std::time::Duration,
        bcrypt_cost: u32,
        jwt: Option<jwt::JwtTokens>,
    ) -> Self {
        let bcrypt_cost = if (4..=31).contains(&bcrypt_cost) {
            bcrypt_cost
        } else {
            warn!(target: "auth", "use default bcrypt cost 10 instead of the invalid value {bcrypt_cost}");
            10
        };
        AuthStore {
            state: RwLock::new(State::default()),
            tokens: SimpleTokens::new(token_ttl),
            jwt,
            bcrypt_cost,
        }
    }

    /// Loads the state from the backend (at start and after a snapshot is restored).
    pub fn recover(&self, store: &Store) -> Result<(), ketch_mvcc::StoreError> {
        let record = store.meta_get(AUTH_META_KEY)?;
        let decoded = record.map(|b| AuthState::decode(&b[..])).transpose();
        let saved = match decoded {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                warn!(target: "auth", "the auth record is unreadable, starting with auth disabled: {e}");
                AuthState::default()
            }
        };
        let mut st = self.write();
        st.enabled = saved.enabled;
        st.revision = saved.revision;
        st.users = saved
            .users
            .into_iter()
            .map(|u| (String::from_utf8_lossy(&u.name).into_owned(), u))
            .collect();
        st.roles = saved
            .roles
            .into_iter()
            .map(|r| (String::from_utf8_lossy(&r.name).into_owned(), r))
            .collect();
        st.refresh_perms();
        let enabled = st.enabled;
        drop(st);
        if enabled {
            self.tokens.enable();
        } else {
            self.tokens.disable();
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_enabled(&self) -> bool {
        self.read().enabled
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    // ---- reads (the service answers these from the local state) ----

    pub fn user_roles(&self, name: &str) -> AuthResult<Vec<String>> {
        self.read()
            .users
            .get(name)
            .map(|u| u.roles.clone())
            .ok_or(EtcdError::UserNotFound)
    }

    pub fn user_names(&self) -> Vec<String> {
        self.read().users.keys().cloned().collect()
    }

    pub fn role_perms(&self, name: &str) -> AuthResult<Vec<Permission>> {
        self.read()
            .roles
            .get(name)
            .map(|r| r.key_permission.clone())
            .ok_or(EtcdError::RoleNotFound)
    }

    pub fn role_names(&self) -> Vec<String> {
        self.read().roles.keys().cloned().collect()
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.read()
            .users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's CheckPassword, minus the hash comparison (done by the caller off the async
    /// workers): the stored hash and the revision it was read at.
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), PasswordError> {
        let st = self.read();
        if !st.enabled {
            return Err(PasswordError::Etcd(EtcdError::AuthNotEnabled));
        }
        let user = st
            .users
            .get(name)
            .ok_or(PasswordError::Etcd(EtcdError::AuthFailed))?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(PasswordError::NoPasswordUser);
        }
        Ok((user.password.to_vec(), st.revision))
    }

    // ---- checks ----

    /// etcd's IsAdminPermitted: only users with the root role, when auth is enabled.
    pub fn check_admin(&self, ai: Option<&AuthInfo>) -> AuthResult<()> {
        let st = self.read();
        if !st.enabled {
            return Ok(());
        }
        let Some(ai) = ai.filter(|a| !a.username.is_empty()) else {
            return Err(EtcdError::UserEmpty);
        };
        let user = st.users.get(&ai.username).ok_or(EtcdError::UserNotFound)?;
        if !has_root_role(user) {
            return Err(EtcdError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's isOpPermitted: `range_end` empty for one key, `\0` for every key from `key`.
    pub fn check_key(
        &self,
        ai: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        write: bool,
    ) -> AuthResult<()> {
        self.read().check_key(ai, key, range_end, write)
    }

    pub fn check_range(
        &self,
        ai: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
    ) -> AuthResult<()> {
        self.check_key(ai, key, range_end, false)
    }

    /// etcd's checkTxnAuth: every compare needs read, every op its permission, nested txns too.
    pub fn check_txn(&self, ai: Option<&AuthInfo>, txn: &TxnRequest) -> AuthResult<()> {
        let st = self.read();
        if !st.enabled {
            return Ok(());
        }
        st.check_txn(ai, txn)
    }

    /// The checks etcd's auth applier makes on a committed request before applying it.
    /// `lease_keys` gives the keys attached to a lease.
    pub fn check_applied(
        &self,
        header: &RequestHeader,
        request: &Request,
        lease_keys: &dyn Fn(i64) -> Vec<bytes::Bytes>,
    ) -> AuthResult<()> {
        let st = self.read();
        if !st.enabled {
            return Ok(());
        }
        let ai = AuthInfo {
            username: header.username.clone(),
            revision: header.auth_revision,
        };
        let ai = Some(&ai);
        let lease_puts = |lease: i64| -> AuthResult<()> {
            if lease == 0 {
                return Ok(());
            }
            for key in lease_keys(lease) {
                st.check_key(ai, &key, b"", true)?;
            }
            Ok(())
        };
        match request {
            Request::Put(p) => {
                st.check_key(ai, &p.key, b"", true)?;
                lease_puts(p.lease)?;
                if p.prev_kv {
                    st.check_key(ai, &p.key, b"", false)?;
                }
                Ok(())
            }
            Request::DeleteRange(d) => {
                st.check_key(ai, &d.key, &d.range_end, true)?;
                if d.prev_kv {
                    st.check_key(ai, &d.key, &d.range_end, false)?;
                }
                Ok(())
            }
            Request::Txn(t) => st.check_txn(ai, t),
            Request::LeaseRevoke(r) => lease_puts(r.id),
            Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_) => {
                drop(st);
                self.check_admin(ai)
            }
            _ => Ok(()),
        }
    }

    // ---- changes, applied in log order on every member ----

    /// Applies one committed auth request at log `index`; `Some(token)` for Authenticate.
    pub fn apply_change(
        &self,
        wb: &mut WriteBatch<'_>,
        request: Request,
        index: u64,
    ) -> AuthResult<Option<String>> {
        let mut st = self.write();
        let mut token = None;
        // whether the revision moves (every change but enable and authenticate)
        let mut bump = true;
        match request {
            Request::AuthEnable(_) => {
                bump = false;
                if st.enabled {
                    info!(target: "auth", "authentication is already enabled; ignored auth enable request");
                    return Ok(None);
                }
                let root = st.users.get(ROOT_USER).ok_or(EtcdError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(EtcdError::RootRoleNotExist);
                }
                st.enabled = true;
                self.tokens.enable();
                info!(target: "auth", "enabled authentication");
            }
            Request::AuthDisable(_) => {
                if !st.enabled {
                    return Ok(None);
                }
                st.enabled = false;
                self.tokens.disable();
                info!(target: "auth", "disabled authentication");
            }
            Request::Authenticate(a) => {
                bump = false;
                if !st.enabled {
                    return Err(EtcdError::AuthNotEnabled);
                }
                let user = st.users.get(&a.name).ok_or(EtcdError::AuthFailed)?;
                if user.options.as_ref().is_some_and(|o| o.no_password) {
                    return Err(EtcdError::AuthFailed);
                }
                let t = match &self.jwt {
                    // signed with the revision as of now (a member without the private key
                    // issues none: its clients authenticate elsewhere)
                    Some(jwt) => jwt.sign(&a.name, st.revision).unwrap_or_default(),
                    None => {
                        let t = format!("{}.{index}", a.simple_token);
                        self.tokens.assign(&a.name, &t);
                        t
                    }
                };
                token = Some(t);
            }
            Request::UserAdd(u) => {
                let name = String::from_utf8_lossy(&u.name).into_owned();
                if name.is_empty() {
                    return Err(EtcdError::UserEmpty);
                }
                if st.users.contains_key(&name) {
                    return Err(EtcdError::UserAlreadyExist);
                }
                let user = User {
                    roles: Vec::new(),
                    options: Some(u.options.unwrap_or_default()),
                    ..u
                };
                st.users.insert(name.clone(), user);
                info!(target: "auth", "added a user {name:?}");
            }
            Request::UserDelete(d) => {
                if st.enabled && d.name == ROOT_USER {
                    warn!(target: "auth", "cannot delete 'root' user");
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if st.users.remove(&d.name).is_none() {
                    return Err(EtcdError::UserNotFound);
                }
                self.tokens.invalidate_user(&d.name);
                info!(target: "auth", "deleted a user {:?}", d.name);
            }
            Request::UserChangePassword(u) => {
                let name = String::from_utf8_lossy(&u.name).into_owned();
                let user = st.users.get_mut(&name).ok_or(EtcdError::UserNotFound)?;
                user.password = u.password;
                self.tokens.invalidate_user(&name);
                info!(target: "auth", "changed a password of a user {name:?}");
            }
            Request::UserGrantRole(AuthUserGrantRoleRequest { user, role }) => {
                if !st.users.contains_key(&user) {
                    return Err(EtcdError::UserNotFound);
                }
                if role != ROOT_ROLE && !st.roles.contains_key(&role) {
                    return Err(EtcdError::RoleNotFound);
                }
                let u = st.users.get_mut(&user).expect("checked above");
                if u.roles.contains(&role) {
                    warn!(target: "auth", "ignored grant role request to a user {user:?}: already has {role:?}");
                    return Ok(None);
                }
                u.roles.push(role.clone());
                u.roles.sort();
                info!(target: "auth", "granted a role {role:?} to a user {user:?}");
            }
            Request::UserRevokeRole(AuthUserRevokeRoleRequest { name, role }) => {
                if st.enabled && name == ROOT_USER && role == ROOT_ROLE {
                    warn!(target: "auth", "'root' user cannot revoke 'root' role");
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                let u = st.users.get_mut(&name).ok_or(EtcdError::UserNotFound)?;
                let before = u.roles.len();
                u.roles.retain(|r| *r != role);
                if u.roles.len() == before {
                    return Err(EtcdError::RoleNotGranted);
                }
                info!(target: "auth", "revoked a role {role:?} from a user {name:?}");
            }
            Request::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::RoleEmpty);
                }
                if st.roles.contains_key(&r.name) {
                    return Err(EtcdError::RoleAlreadyExist);
                }
                st.roles.insert(
                    r.name.clone(),
                    Role {
                        name: r.name.clone().into(),
                        key_permission: Vec::new(),
                    },
                );
                info!(target: "auth", "created a role {:?}", r.name);
            }
            Request::RoleDelete(r) => {
                if st.enabled && r.role == ROOT_ROLE {
                    warn!(target: "auth", "cannot delete 'root' role");
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if st.roles.remove(&r.role).is_none() {
                    return Err(EtcdError::RoleNotFound);
                }
                for u in st.users.values_mut() {
                    u.roles.retain(|x| *x != r.role);
                }
                info!(target: "auth", "deleted a role {:?}", r.role);
            }
            Request::RoleGrantPermission(AuthRoleGrantPermissionRequest { name, perm }) => {
                let perm = perm.unwrap_or_default();
                let role = st.roles.get_mut(&name).ok_or(EtcdError::RoleNotFound)?;
                let perms = &mut role.key_permission;
                let at = perms.partition_point(|p| p.key < perm.key);
                if at < perms.len()
                    && perms[at].key == perm.key
                    && perms[at].range_end == perm.range_end
                {
                    perms[at].perm_type = perm.perm_type;
                } else {
                    perms.push(perm.clone());
                    // stable, by key only: etcd's sort.Sort(permSlice) on keys
                    perms.sort_by(|a, b| a.key.cmp(&b.key));
                }
                info!(target: "auth", "granted/updated a permission to a role {name:?}");
            }
            Request::RoleRevokePermission(AuthRoleRevokePermissionRequest {
                role,
                key,
                range_end,
            }) => {
                let r = st.roles.get_mut(&role).ok_or(EtcdError::RoleNotFound)?;
                let before = r.key_permission.len();
                r.key_permission
                    .retain(|p| !(p.key == key && p.range_end == range_end));
                if r.key_permission.len() == before {
                    return Err(EtcdError::PermissionNotGranted);
                }
                info!(target: "auth", "revoked a permission on range of role {role:?}");
            }
            _ => return Ok(None),
        }
        if bump {
            st.revision += 1;
        }
        st.refresh_perms();
        wb.meta_put(AUTH_META_KEY, &st.encode());
        Ok(token)
    }
}

/// Why a password could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    Etcd(EtcdError),
    /// etcd's ErrNoPasswordUser, which its gRPC layer passes on as an unknown error.
    NoPasswordUser,
}

pub const NO_PASSWORD_USER: &str =
    "auth: authentication failed, password was given for no password user";

fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT_ROLE)
}

impl State {
    fn encode(&self) -> Vec<u8> {
        AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
        .encode_to_vec()
    }

    fn refresh_perms(&mut self) {
        let mut all = BTreeMap::new();
        for (name, user) in &self.users {
            let mut perms = UserPerms::default();
            for role in user.roles.iter().filter_map(|r| self.roles.get(r)) {
                for p in &role.key_permission {
                    let end = if p.range_end.is_empty() {
                        point_end(&p.key)
                    } else if p.range_end[..] == [0] {
                        Vec::new()
                    } else {
                        p.range_end.to_vec()
                    };
                    let ivl = (p.key.to_vec(), end);
                    match PermType::try_from(p.perm_type).unwrap_or(PermType::Read) {
                        PermType::Read => perms.read.push(ivl),
                        PermType::Write => perms.write.push(ivl),
                        PermType::Readwrite => {
                            perms.read.push(ivl.clone());
                            perms.write.push(ivl);
                        }
                    }
                }
            }
            all.insert(name.clone(), perms);
        }
        self.perms = all;
    }

    fn check_key(
        &self,
        ai: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        write: bool,
    ) -> AuthResult<()> {
        if !self.enabled {
            return Ok(());
        }
        let ai = ai.cloned().unwrap_or_default();
        if ai.revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        if ai.revision < self.revision {
            warn!(target: "auth", "request auth revision {} is less than current node auth revision {}", ai.revision, self.revision);
            return Err(EtcdError::AuthOldRevision);
        }
        let Some(user) = self.users.get(&ai.username) else {
            warn!(target: "auth", "cannot find a user {:?} for permission check", ai.username);
            return Err(EtcdError::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        let Some(perms) = self.perms.get(&ai.username) else {
            return Err(EtcdError::PermissionDenied);
        };
        let ivls = if write { &perms.write } else { &perms.read };
        let ok = if range_end.is_empty() {
            let end = point_end(key);
            ivls.iter().any(|(b, e)| overlaps(b, e, key, &end))
        } else {
            let end: &[u8] = if range_end == [0] { b"" } else { range_end };
            covers(ivls, key, end)
        };
        if ok {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    fn check_ops(&self, ai: Option<&AuthInfo>, ops: &[RequestOp]) -> AuthResult<()> {
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    self.check_key(ai, &r.key, &r.range_end, false)?
                }
                Some(request_op::Request::RequestPut(p)) => {
                    self.check_key(ai, &p.key, b"", true)?
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    self.check_key(ai, &d.key, &d.range_end, true)?;
                    if d.prev_kv {
                        self.check_key(ai, &d.key, &d.range_end, false)?;
                    }
                }
                Some(request_op::Request::RequestTxn(t)) => self.check_txn(ai, t)?,
                None => {}
            }
        }
        Ok(())
    }

    fn check_txn(&self, ai: Option<&AuthInfo>, t: &TxnRequest) -> AuthResult<()> {
        for c in &t.compare {
            self.check_key(ai, &c.key, &c.range_end, false)?;
        }
        self.check_ops(ai, &t.success)?;
        self.check_ops(ai, &t.failure)
    }
}

/// The end of the one-key interval `[key, key\0)`.
fn point_end(key: &[u8]) -> Vec<u8> {
    let mut e = key.to_vec();
    e.push(0);
    e
}

/// Compares interval ends where empty is +infinity.
fn cmp_end(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// Whether `[b1, e1)` and `[b2, e2)` share a key.
fn overlaps(b1: &[u8], e1: &[u8], b2: &[u8], e2: &[u8]) -> bool {
    cmp_end(b1, e2).is_lt() && cmp_end(b2, e1).is_lt()
}

/// etcd's IntervalTree.Contains: the intervals overlapping `[begin, end)`, taken in order of
/// their starts, are contiguous and together reach from at or before `begin` to `end`.
fn covers(ivls: &[(Vec<u8>, Vec<u8>)], begin: &[u8], end: &[u8]) -> bool {
    let mut hits: Vec<&(Vec<u8>, Vec<u8>)> = ivls
        .iter()
        .filter(|(b, e)| overlaps(b, e, begin, end))
        .collect();
    if hits.is_empty() {
        return false;
    }
    hits.sort_by(|x, y| cmp_end(&x.0, &y.0).then_with(|| cmp_end(&x.1, &y.1)));
    let min_begin = &hits[0].0;
    let mut max_end: &[u8] = &hits[0].1;
    for (b, e) in &hits[1..] {
        if cmp_end(max_end, b).is_lt() {
            return false;
        }
        if cmp_end(e, max_end).is_gt() {
            max_end = e;
        }
    }
    cmp_end(max_end, end).is_ge() && cmp_end(min_begin, begin).is_le()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(b: &str, e: &str) -> (Vec<u8>, Vec<u8>) {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn covering_needs_contiguous_intervals() {
        let ivls = vec![iv("a", "c"), iv("c", "e")];
        assert!(covers(&ivls, b"a", b"e"));
        assert!(covers(&ivls, b"b", b"d"));
        assert!(!covers(&ivls, b"a", b"f"));
        assert!(!covers(&[iv("a", "b"), iv("c", "e")], b"a", b"d"));
        // from-key permission covers any range from its key on, and from-key requests
        assert!(covers(&[iv("k", "")], b"k", b""));
        assert!(covers(&[iv("k", "")], b"m", b"z"));
        assert!(!covers(&[iv("k", "z")], b"k", b""));
    }

    fn perm(t: PermType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
        }
    }

    fn txn_with(ops: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        }
    }

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(
                ketch_api::etcdserverpb::PutRequest {
                    key: key.as_bytes().to_vec().into(),
                    ..Default::default()
                },
            )),
        }
    }

    /// Changes applied through a real backend, then etcd's checks: nested txns, old auth
    /// revisions, no user, persistence across a recovery.
    #[test]
    fn applied_changes_drive_the_checks_and_survive_recovery() {
        use ketch_api::etcdserverpb::{AuthEnableRequest, AuthRoleAddRequest};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let auth = AuthStore::new(std::time::Duration::from_secs(300), 4, None);
        let mut wb = store.write().unwrap();
        let user = |n: &str| User {
            name: n.as_bytes().to_vec().into(),
            password: Default::default(),
            roles: vec![],
            options: None,
        };
        for (i, req) in [
            Request::UserAdd(user("root")),
            Request::UserAdd(user("u")),
            Request::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
            Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(perm(PermType::Readwrite, "a", "m")),
            }),
            Request::UserGrantRole(AuthUserGrantRoleRequest {
                user: "u".into(),
                role: "r".into(),
            }),
            Request::UserGrantRole(AuthUserGrantRoleRequest {
                user: "root".into(),
                role: ROOT_ROLE.into(),
            }),
            Request::AuthEnable(AuthEnableRequest {}),
        ]
        .into_iter()
        .enumerate()
        {
            auth.apply_change(&mut wb, req, i as u64 + 1).unwrap();
        }
        wb.commit(true).unwrap();
        let rev = auth.revision();
        assert_eq!(rev, 6, "every change but enable moves the revision");
        let u = AuthInfo {
            username: "u".into(),
            revision: rev,
        };
        assert_eq!(auth.check_key(Some(&u), b"b", b"", true), Ok(()));
        assert_eq!(auth.check_range(Some(&u), b"a", b"m"), Ok(()));
        assert_eq!(
            auth.check_range(Some(&u), b"a", b"n"),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(auth.check_range(None, b"a", b""), Err(EtcdError::UserEmpty));
        let old = AuthInfo {
            username: "u".into(),
            revision: rev - 1,
        };
        assert_eq!(
            auth.check_range(Some(&old), b"a", b""),
            Err(EtcdError::AuthOldRevision)
        );
        // a put outside the permission, two txns deep
        let inner = txn_with(vec![put("b"), put("z")]);
        let outer = txn_with(vec![
            put("c"),
            RequestOp {
                request: Some(request_op::Request::RequestTxn(inner)),
            },
        ]);
        assert_eq!(
            auth.check_txn(Some(&u), &outer),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(auth.check_txn(Some(&u), &txn_with(vec![put("c")])), Ok(()));
        let root = AuthInfo {
            username: "root".into(),
            revision: rev,
        };
        assert_eq!(auth.check_txn(Some(&root), &outer), Ok(()));
        assert_eq!(auth.check_admin(Some(&u)), Err(EtcdError::PermissionDenied));

        let again = AuthStore::new(std::time::Duration::from_secs(300), 4, None);
        again.recover(&store).unwrap();
        assert!(again.is_enabled());
        assert_eq!(again.revision(), rev);
        assert_eq!(again.check_key(Some(&u), b"b", b"", true), Ok(()));
        assert_eq!(
            again.user_names(),
            vec!["root".to_string(), "u".to_string()]
        );
    }

    #[test]
    fn keys_match_points_and_ranges() {
        assert!(overlaps(
            b"foo",
            &point_end(b"foo"),
            b"foo",
            &point_end(b"foo")
        ));
        assert!(!overlaps(
            b"foo",
            &point_end(b"foo"),
            b"foo0",
            &point_end(b"foo0")
        ));
        assert!(overlaps(b"a", b"", b"zzz", &point_end(b"zzz")));
    }
}
