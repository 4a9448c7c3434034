//! etcd's simple tokens: `<16 random letters>.<raft index>`, kept in each member's memory
//! (every member assigns the token when it applies the Authenticate entry), valid for the
//! `--auth-token-ttl` and renewed whenever used. Disabling auth drops them all; deleting a
//! user or changing its password drops that user's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;

const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const PREFIX_LEN: usize = 16;

pub struct SimpleTokens {
    ttl: Duration,
    /// token → (user, expiry); `None` while auth is disabled
    tokens: Mutex<Option<HashMap<String, (String, Instant)>>>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> Self {
        // etcd: a TTL of 0 means its 5-minute default
        let ttl = if ttl.is_zero() {
            Duration::from_secs(300)
        } else {
            ttl
        };
        SimpleTokens {
            ttl,
            tokens: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, (String, Instant)>>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The random part of a new token, chosen by the member that checked the password.
    pub fn gen_prefix() -> String {
        let mut rng = rand::rng();
        (0..PREFIX_LEN)
            .map(|_| TOKEN_LETTERS[rng.random_range(0..TOKEN_LETTERS.len())] as char)
            .collect()
    }

    pub fn enable(&self) {
        let mut t = self.lock();
        if t.is_none() {
            *t = Some(HashMap::new());
        }
    }

    pub fn disable(&self) {
        *self.lock() = None;
    }

    pub fn assign(&self, user: &str, token: &str) {
        let now = Instant::now();
        if let Some(map) = self.lock().as_mut() {
            map.retain(|_, (_, exp)| *exp > now);
            map.insert(token.to_string(), (user.to_string(), now + self.ttl));
        }
    }

    pub fn invalidate_user(&self, user: &str) {
        if let Some(map) = self.lock().as_mut() {
            map.retain(|_, (u, _)| u != user);
        }
    }

    /// The user of a live token, renewing it.
    pub fn lookup(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut guard = self.lock();
        let map = guard.as_mut()?;
        match map.get_mut(token) {
            Some((user, exp)) if *exp > now => {
                *exp = now + self.ttl;
                Some(user.clone())
            }
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    /// The raft index a simple token was assigned at, if it has the token's shape.
    pub fn index_of(token: &str) -> Option<u64> {
        let mut parts = token.split('.');
        let (_, index, rest) = (parts.next()?, parts.next()?, parts.next());
        if rest.is_some() {
            return None;
        }
        index.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_renew() {
        let t = SimpleTokens::new(Duration::from_millis(200));
        t.assign("a", "x.1");
        assert_eq!(t.lookup("x.1"), None, "disabled store assigns nothing");
        t.enable();
        t.assign("a", "x.1");
        assert_eq!(t.lookup("x.1").as_deref(), Some("a"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(t.lookup("x.1").is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(t.lookup("x.1").is_some(), "use renews the TTL");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.lookup("x.1"), None);
        assert_eq!(SimpleTokens::index_of("abc.12"), Some(12));
        assert_eq!(SimpleTokens::index_of("abc"), None);
        assert_eq!(SimpleTokens::gen_prefix().len(), 16);
    }
}
