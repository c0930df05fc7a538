//! Ray's token authentication (Ray >= 2.52): one random token per cluster, kept in a file only
//! its owner can read.
//!
//! With `RAY_AUTH_MODE=token` every node checks it on each gRPC call (GCS, raylet, agents,
//! core workers, Serve replicas) and the dashboard on each HTTP call, except health checks
//! and the static files of its web UI (measured with Ray 2.60: no token → `401 Unauthorized:
//! Missing authentication token`, a wrong one → `403 Forbidden: Invalid authentication token`).
//! A node reads the token from `RAY_AUTH_TOKEN` when that is not empty, else from the file
//! named by `RAY_AUTH_TOKEN_PATH` (see [`crate::node::NodeLaunch::auth_token_file`]). HTTP
//! clients send `Authorization: Bearer <token>`.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of a cluster's token file in its private folder.
pub const TOKEN_FILE: &str = "auth_token";

/// A cluster's token. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

/// Why a token could not be made, stored or read.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The token file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The token file can be read by others or belongs to someone else.
    #[error("token file {path} is not private (mode {mode:o}, owner {uid}); refusing to use it")]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        uid: u32,
    },
    /// The file does not hold a token we made.
    #[error("token file {path} does not hold a token (64 hex digits)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl AuthToken {
    /// A new random token: 32 bytes from the OS, as 64 hex digits (what `ray get-auth-token
    /// --generate` makes too).
    pub fn generate() -> AuthToken {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        AuthToken(hex::encode(bytes))
    }

    /// A token from text (surrounding whitespace ignored): 64 hex digits.
    pub fn parse(text: &str) -> Option<AuthToken> {
        let text = text.trim();
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| AuthToken(text.to_string()))
    }

    /// The token itself.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The value of an `Authorization` header carrying it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Reads the token in `path`, which must be a regular file of this user, mode 0600 or
    /// stricter.
    pub fn read(path: &Path) -> Result<AuthToken, AuthError> {
        let io = |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.is_file() || mode & 0o077 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(AuthError::NotPrivate {
                path: path.to_path_buf(),
                mode,
                uid: meta.uid(),
            });
        }
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(1024)
            .read_to_string(&mut text)
            .map_err(io)?;
        AuthToken::parse(&text).ok_or_else(|| AuthError::Malformed {
            path: path.to_path_buf(),
        })
    }

    /// The token in `path`, made (random, mode 0600, atomically) when the file does not exist
    /// yet. Nodes of one cluster starting at once all get the same token.
    pub fn read_or_create(path: &Path) -> Result<AuthToken, AuthError> {
        match AuthToken::read(path) {
            Err(AuthError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            other => return other,
        }
        let io = |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let token = AuthToken::generate();
        // Written in full under another name, then linked: the name appears with its content
        // or not at all, and an existing token is never replaced.
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(token.0.as_bytes())?;
                f.sync_all()
            });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(token),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => AuthToken::read(path),
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_private_and_shared_by_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1").join(TOKEN_FILE);
        let first = AuthToken::read_or_create(&path).unwrap();
        assert_eq!(first.secret().len(), 64);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second node of the same cluster gets the same token.
        assert_eq!(AuthToken::read_or_create(&path).unwrap(), first);
        assert_eq!(AuthToken::read(&path).unwrap(), first);
        // Another cluster gets another one.
        let other = AuthToken::read_or_create(&dir.path().join("c2").join(TOKEN_FILE)).unwrap();
        assert_ne!(other, first);
        assert_eq!(first.bearer(), format!("Bearer {}", first.secret()));
        assert!(!format!("{first:?}").contains(first.secret()));
        // No temporary file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn readable_by_others_or_malformed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        std::fs::write(&path, "a".repeat(64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            AuthToken::read(&path),
            Err(AuthError::NotPrivate { mode: 0o644, .. })
        ));
        assert!(matches!(
            AuthToken::read_or_create(&path),
            Err(AuthError::NotPrivate { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(AuthToken::read(&path).unwrap().secret(), "a".repeat(64));
        std::fs::write(&path, "not a token").unwrap();
        assert!(matches!(
            AuthToken::read(&path),
            Err(AuthError::Malformed { .. })
        ));
        // A symlink is not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(AuthToken::read(&link).is_err());
        assert_eq!(
            AuthToken::parse(&format!(" {}\n", "B".repeat(64)))
                .unwrap()
                .secret()
                .len(),
            64
        );
        assert!(AuthToken::parse("abc").is_none());
    }
}
