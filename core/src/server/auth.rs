//! etcd's Auth service, and how every other service learns who is asking: the simple token in
//! the gRPC metadata `token`, or without one the common name of a verified client certificate
//! (etcd's AuthInfoFromCtx / AuthInfoFromTLS).
//!
//! Changes go through the Raft log with the caller in the proposal header and are checked
//! again when applied (`crate::auth::AuthStore::check_applied`). Passwords are hashed here,
//! before proposing: the log holds bcrypt hashes only. Authenticate checks the password here
//! and proposes only the user name and the token's random part. Reads (user/role get and
//! list) are answered from the local state after a read barrier, with etcd's apply-time checks.

use ketch_api::authpb::{User, UserAddOptions};
use ketch_api::etcdserverpb::auth_server::Auth;
use ketch_api::etcdserverpb::*;
use ketch_api::ketchpb::{raft_request::Request as Proposal, AuthenticateRecord};
use ketch_api::status::EtcdError;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::propose::expect_applied;
use super::{Server, SharedServer};
use crate::auth::token::SimpleTokens;
use crate::auth::{AuthInfo, PasswordError, NO_PASSWORD_USER};

/// gRPC metadata keys of the token: clientv3's, and grpc-gateway's for JSON clients.
const TOKEN_KEY: &str = "token";
const TOKEN_KEY_GATEWAY: &str = "authorization";

tokio::task_local! {
    /// The caller of the request a task is serving, for proposals made on its behalf deep in
    /// shared helpers (lock and election): `Server::propose` puts it in the header.
    pub static REQUEST_AUTH: Option<AuthInfo>;
}

/// What a request says about its caller: kept by a stream to find the caller again at each
/// request on it (a token may expire meanwhile).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    token: Option<String>,
    /// the CN of a verified client certificate (not for grpc-gateway requests, which come on
    /// the gateway's own certificate)
    identity: Option<String>,
}

impl Credentials {
    /// `trusted_proxies`: certificate names of Ketch proxies whose word about their client's
    /// certificate name is taken (`--experimental-trusted-proxy-cn`).
    pub fn of(md: &MetadataMap, ext: &http::Extensions, trusted_proxies: &[String]) -> Self {
        let token = md
            .get(TOKEN_KEY)
            .or_else(|| md.get(TOKEN_KEY_GATEWAY))
            .and_then(|v| v.to_str().ok());
        let mut identity = if md.get("grpcgateway-accept").is_some() {
            None
        } else {
            ketch_gateway::tls::request_identity(ext)
        };
        if identity
            .as_ref()
            .is_some_and(|cn| trusted_proxies.contains(cn))
        {
            // a trusted proxy speaks for its client (and a client it did not name is nobody)
            identity = md
                .get(ketch_gateway::tls::PROXIED_IDENTITY)
                .and_then(|v| v.to_str().ok())
                .filter(|cn| !cn.is_empty())
                .map(str::to_string);
        }
        Credentials {
            token: token.map(str::to_string),
            identity,
        }
    }
}

impl Server {
    /// Who is asking: `None` when no token is sent and no client certificate names a user.
    pub async fn auth_info(
        &self,
        md: &MetadataMap,
        ext: &http::Extensions,
    ) -> Result<Option<AuthInfo>, EtcdError> {
        self.resolve(&Credentials::of(md, ext, &self.trusted_proxy_cns))
            .await
    }

    pub async fn resolve(&self, c: &Credentials) -> Result<Option<AuthInfo>, EtcdError> {
        if let Some(token) = &c.token {
            return self.token_info(token).await.map(Some);
        }
        Ok(c.identity.clone().map(|username| AuthInfo {
            username,
            revision: self.auth.revision(),
        }))
    }

    /// [`Server::auth_info`] of a tonic request.
    pub async fn auth_of<T>(&self, req: &Request<T>) -> Result<Option<AuthInfo>, EtcdError> {
        self.auth_info(req.metadata(), req.extensions()).await
    }

    /// Runs `serve` on the request's message as its caller: proposals made on the way carry
    /// the caller's identity ([`REQUEST_AUTH`]).
    pub async fn as_caller<T, R, F>(
        &self,
        req: Request<T>,
        serve: impl FnOnce(T) -> F,
    ) -> Result<R, Status>
    where
        F: std::future::Future<Output = Result<R, Status>>,
    {
        let ai = self.auth_of(&req).await?;
        REQUEST_AUTH.scope(ai, serve(req.into_inner())).await
    }

    /// A simple token's user, once this member has applied the entry that made the token.
    async fn token_info(&self, token: &str) -> Result<AuthInfo, EtcdError> {
        if let Some(jwt) = &self.auth.jwt {
            // stateless: the signature and expiry say it all; the revision it carries is
            // checked against the auth state when a request applies
            return match jwt.verify(token) {
                Some(c) => Ok(AuthInfo {
                    username: c.username,
                    revision: c.revision,
                }),
                None => {
                    tracing::warn!(target: "auth", "invalid auth token: {token}");
                    Err(EtcdError::InvalidAuthToken)
                }
            };
        }
        let Some(index) = SimpleTokens::index_of(token) else {
            tracing::warn!(target: "auth", "invalid auth token: {token}");
            return Err(EtcdError::InvalidAuthToken);
        };
        let mut applied = self.applied.clone();
        let caught_up =
            tokio::time::timeout(self.request_timeout, applied.wait_for(|a| *a >= index)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            return Err(EtcdError::InvalidAuthToken);
        }
        let revision = self.auth.revision();
        match self.auth.tokens.lookup(token) {
            Some(username) => Ok(AuthInfo { username, revision }),
            None => {
                tracing::warn!(target: "auth", "invalid auth token: {token}");
                Err(EtcdError::InvalidAuthToken)
            }
        }
    }

    /// etcd's IsAdminPermitted for the caller of `req` (member operations).
    pub async fn check_admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let ai = self.auth_of(req).await?;
        self.auth.check_admin(ai.as_ref())?;
        Ok(())
    }

    /// The same for maintenance operations, whose refusals etcd 3.4 sends as the auth
    /// store's own errors (code Unknown, `auth: ...`), not translated to rpctypes.
    pub async fn check_admin_maintenance<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let checked = match self.auth_of(req).await {
            Ok(ai) => self.auth.check_admin(ai.as_ref()),
            Err(e) => Err(e),
        };
        checked.map_err(|e| {
            let text = match e {
                EtcdError::UserEmpty => "auth: user name is empty",
                EtcdError::UserNotFound => "auth: user not found",
                EtcdError::InvalidAuthToken => "auth: invalid auth token",
                _ => "auth: permission denied",
            };
            Status::unknown(text)
        })
    }
}

/// bcrypt as Go's x/crypto/bcrypt writes it (`$2a$`), off the async workers.
async fn hash_password(password: String, cost: u32) -> Result<Vec<u8>, Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash_with_result(password, cost))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map(|h| h.format_for_version(bcrypt::Version::TwoA).into_bytes())
        .map_err(|e| Status::unknown(e.to_string()))
}

pub struct AuthService(pub SharedServer);

impl AuthService {
    async fn change<T>(
        &self,
        req: &Request<T>,
        proposal: Proposal,
    ) -> Result<ResponseHeader, Status> {
        let ai = self.0.auth_of(req).await?;
        match self.0.propose_as(ai.as_ref(), proposal).await {
            Ok(_) => Ok(self.0.header(0)),
            Err(e) => Err(e.into()),
        }
    }

    /// The caller of a read, after a read barrier (etcd sends these through the log).
    async fn reader<T>(&self, req: &Request<T>) -> Result<Option<AuthInfo>, Status> {
        let ai = self.0.auth_of(req).await?;
        self.0.linearizable_barrier().await?;
        Ok(ai)
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self
            .change(&req, Proposal::AuthEnable(AuthEnableRequest {}))
            .await?;
        Ok(Response::new(AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self
            .change(&req, Proposal::AuthDisable(AuthDisableRequest {}))
            .await?;
        Ok(Response::new(AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        self.0.linearizable_barrier().await?;
        let r = req.into_inner();
        loop {
            let (hash, checked) = match self.0.auth.password_hash(&r.name) {
                Ok(h) => h,
                Err(PasswordError::Etcd(e)) => {
                    if e != EtcdError::AuthNotEnabled {
                        tracing::warn!(target: "etcdserver", "invalid authentication was requested for user {:?}: {e}", r.name);
                    }
                    return Err(e.into());
                }
                Err(PasswordError::NoPasswordUser) => {
                    return Err(Status::unknown(NO_PASSWORD_USER))
                }
            };
            let password = r.password.clone();
            let ok = tokio::task::spawn_blocking(move || {
                std::str::from_utf8(&hash)
                    .ok()
                    .is_some_and(|h| bcrypt::verify(password, h).unwrap_or(false))
            })
            .await
            .unwrap_or(false);
            if !ok {
                tracing::info!(target: "auth", "invalid password for user {:?}", r.name);
                return Err(EtcdError::AuthFailed.into());
            }
            let record = AuthenticateRecord {
                name: r.name.clone(),
                simple_token: SimpleTokens::gen_prefix(),
            };
            let token = expect_applied!(
                self.0
                    .propose_as(None, Proposal::Authenticate(record))
                    .await,
                Token
            )?;
            if checked == self.0.auth.revision() {
                return Ok(Response::new(AuthenticateResponse {
                    header: Some(self.0.header(0)),
                    token,
                }));
            }
            tracing::info!(target: "etcdserver", "revision when password checked became stale; retrying");
        }
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let r = req.get_ref().clone();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password {
            Vec::new()
        } else {
            hash_password(r.password, self.0.auth.bcrypt_cost).await?
        };
        let user = User {
            name: r.name.into(),
            password: password.into(),
            roles: Vec::new(),
            options: Some(r.options.unwrap_or(UserAddOptions { no_password: false })),
        };
        let header = self.change(&req, Proposal::UserAdd(user)).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let ai = self.reader(&req).await?;
        let name = &req.get_ref().name;
        if let Err(e) = self.0.auth.check_admin(ai.as_ref()) {
            if ai.as_ref().is_none_or(|a| a.username != *name) {
                return Err(e.into());
            }
        }
        let roles = self.0.auth.user_roles(name)?;
        Ok(Response::new(AuthUserGetResponse {
            header: Some(self.0.header(0)),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let ai = self.reader(&req).await?;
        self.0.auth.check_admin(ai.as_ref())?;
        Ok(Response::new(AuthUserListResponse {
            header: Some(self.0.header(0)),
            users: self.0.auth.user_names(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self
            .change(&req, Proposal::UserDelete(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let r = req.get_ref().clone();
        let password = hash_password(r.password, self.0.auth.bcrypt_cost).await?;
        let user = User {
            name: r.name.into(),
            password: password.into(),
            roles: Vec::new(),
            options: None,
        };
        let header = self
            .change(&req, Proposal::UserChangePassword(user))
            .await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self
            .change(&req, Proposal::UserGrantRole(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self
            .change(&req, Proposal::UserRevokeRole(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let header = self
            .change(&req, Proposal::RoleAdd(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let ai = self.reader(&req).await?;
        let role = &req.get_ref().role;
        if let Err(e) = self.0.auth.check_admin(ai.as_ref()) {
            if !ai
                .as_ref()
                .is_some_and(|a| self.0.auth.has_role(&a.username, role))
            {
                return Err(e.into());
            }
        }
        let perm = self.0.auth.role_perms(role)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: Some(self.0.header(0)),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let ai = self.reader(&req).await?;
        self.0.auth.check_admin(ai.as_ref())?;
        Ok(Response::new(AuthRoleListResponse {
            header: Some(self.0.header(0)),
            roles: self.0.auth.role_names(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self
            .change(&req, Proposal::RoleDelete(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let header = self
            .change(&req, Proposal::RoleGrantPermission(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let header = self
            .change(&req, Proposal::RoleRevokePermission(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}
