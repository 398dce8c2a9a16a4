//! The server secret: 32 random bytes generated on first start and kept, hex-encoded, in a
//! file only the service's user can read. Development tokens are signed with a key derived
//! from it, and other modules derive their own keys (page tokens, ...) with
//! [`ServerSecret::derive`], so that one file is the only secret a fresh install needs.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Length of the secret in bytes.
const SECRET_LEN: usize = 32;

/// A secret file is 64 hex digits and maybe a newline; anything much larger is not ours.
const MAX_FILE_LEN: u64 = 1024;

/// The service's own 32-byte secret. Never printed: `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSecret {
    bytes: [u8; SECRET_LEN],
}

impl ServerSecret {
    /// Reads the secret at `path`, or creates it (mode 0600, parent directories 0700) if it
    /// does not exist yet, so that a fresh install needs no setup step.
    ///
    /// Two processes starting at once agree on one secret: the new file is written aside
    /// and linked into place only if nothing is there yet; the loser reads the winner's.
    /// An existing file that group or others may access, or that does not hold exactly
    /// 32 hex-encoded bytes, is refused rather than silently replaced.
    pub fn load_or_create(path: &Path) -> anyhow::Result<ServerSecret> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating directory {}", parent.display()))?;
        }
        match Self::load(path) {
            Ok(secret) => return Ok(secret),
            Err(LoadError::NotFound) => {}
            Err(LoadError::Other(err)) => return Err(err),
        }
        let secret = Self::generate()?;
        if secret.publish(path)? {
            return Ok(secret);
        }
        // Another process created the file between our read and our write: use theirs.
        match Self::load(path) {
            Ok(secret) => Ok(secret),
            Err(LoadError::NotFound) => bail!("secret file {} vanished", path.display()),
            Err(LoadError::Other(err)) => Err(err),
        }
    }

    /// A fresh secret from the operating system's random source, for tests and for tools
    /// that need a throw-away secret without a file.
    pub fn generate() -> anyhow::Result<ServerSecret> {
        let mut bytes = [0u8; SECRET_LEN];
        OsRng
            .try_fill_bytes(&mut bytes)
            .context("reading the operating system's random source")?;
        Ok(ServerSecret { bytes })
    }

    /// Wraps bytes that are already a secret (for tests that need a fixed one).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> ServerSecret {
        ServerSecret { bytes }
    }

    /// The raw secret. Prefer [`ServerSecret::derive`]: one key per purpose means a key
    /// leaked from one use cannot forge another.
    pub fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.bytes
    }

    /// A 32-byte key for one `purpose` (e.g. `"page-token"`): SHA-256 over
    /// `purpose || 0x00 || secret`. Different purposes give unrelated keys.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(purpose.as_bytes());
        hasher.update([0u8]);
        hasher.update(self.bytes);
        hasher.finalize().into()
    }

    fn load(path: &Path) -> Result<ServerSecret, LoadError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(LoadError::NotFound),
            Err(err) => {
                return Err(LoadError::Other(
                    anyhow::Error::new(err)
                        .context(format!("opening secret file {}", path.display())),
                ));
            }
        };
        Self::read_checked(&mut file, path).map_err(LoadError::Other)
    }

    fn read_checked(file: &mut File, path: &Path) -> anyhow::Result<ServerSecret> {
        let meta = file
            .metadata()
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        if !meta.is_file() {
            bail!("secret file {} is not a regular file", path.display());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "secret file {} has mode {mode:o}: group and others must have no access \
                 (run `chmod 600` on it)",
                path.display()
            );
        }
        if meta.len() > MAX_FILE_LEN {
            bail!("secret file {} is too large to be a secret", path.display());
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("reading secret file {}", path.display()))?;
        let decoded = hex::decode(text.trim()).map_err(|_| {
            anyhow::anyhow!("secret file {} does not hold hex digits", path.display())
        })?;
        let bytes: [u8; SECRET_LEN] = decoded.try_into().map_err(|_| {
            anyhow::anyhow!(
                "secret file {} must hold exactly {SECRET_LEN} bytes (64 hex digits)",
                path.display()
            )
        })?;
        Ok(ServerSecret { bytes })
    }

    /// Writes the secret to a private temporary file beside `path`, then hard-links it into
    /// place, which fails instead of overwriting if `path` already exists. Readers therefore
    /// never see a half-written file. Returns `false` if another process won the race.
    fn publish(&self, path: &Path) -> anyhow::Result<bool> {
        let tmp = temp_path_beside(path)?;
        let written = self.write_new(&tmp);
        let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // Some filesystems have no hard links: fall back to create_new on the target,
            // which still never overwrites but may briefly show an empty file.
            Err(_) => match self.write_new(path) {
                Ok(()) => Ok(true),
                Err(err) if is_already_exists(&err) => Ok(false),
                Err(err) => Err(err),
            },
        });
        let _ = fs::remove_file(&tmp);
        let linked = linked?;
        if linked {
            sync_parent(path);
        }
        Ok(linked)
    }

    /// Creates `path` (which must not exist) with mode 0600 and writes the hex secret.
    fn write_new(&self, path: &Path) -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating secret file {}", path.display()))?;
        let mut text = hex::encode(self.bytes);
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing secret file {}", path.display()))
    }
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret([redacted])")
    }
}

enum LoadError {
    NotFound,
    Other(anyhow::Error),
}

fn is_already_exists(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::AlreadyExists)
}

fn temp_path_beside(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("secret path {} has no file name", path.display()))?;
    let unique: u64 = rand::random();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{unique:016x}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Makes the new directory entry durable; best effort, a crash here only means a new
/// secret on the next start.
fn sync_parent(path: &Path) {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent.and_then(|p| File::open(p).ok()) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::TempDir;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_secret_file_with_mode_0600_and_reloads_the_same_secret() {
        let dir = TempDir::new("secret-create");
        let path = dir.path().join("nested").join("server.secret");
        let first = ServerSecret::load_or_create(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(path.parent().unwrap()), 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let again = ServerSecret::load_or_create(&path).unwrap();
        assert_eq!(first.bytes(), again.bytes());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn refuses_world_readable_secret_file() {
        let dir = TempDir::new("secret-mode");
        let path = dir.write("server.secret", hex::encode([7u8; 32]).as_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = ServerSecret::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        // The file is left alone, not replaced.
        assert_eq!(fs::read_to_string(&path).unwrap(), hex::encode([7u8; 32]));
    }

    #[test]
    fn refuses_group_readable_secret_file() {
        let dir = TempDir::new("secret-group");
        let path = dir.write("server.secret", hex::encode([7u8; 32]).as_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(ServerSecret::load_or_create(&path).is_err());
    }

    #[test]
    fn refuses_secret_file_that_is_not_32_hex_bytes() {
        let dir = TempDir::new("secret-content");
        for content in ["not hex at all", "abcd", &hex::encode([1u8; 33])] {
            let path = dir.write("server.secret", content.as_bytes());
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            assert!(
                ServerSecret::load_or_create(&path).is_err(),
                "accepted {content:?}"
            );
        }
    }

    #[test]
    fn accepts_existing_hex_file_with_trailing_newline() {
        let dir = TempDir::new("secret-existing");
        let path = dir.write(
            "server.secret",
            format!("{}\n", hex::encode([9u8; 32])).as_bytes(),
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        let secret = ServerSecret::load_or_create(&path).unwrap();
        assert_eq!(secret.bytes(), &[9u8; 32]);
    }

    #[test]
    fn concurrent_creators_agree_on_one_secret() {
        let dir = TempDir::new("secret-race");
        let path = dir.path().join("server.secret");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || ServerSecret::load_or_create(&path).unwrap())
            })
            .collect();
        let secrets: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn derive_separates_purposes_and_is_stable() {
        let secret = ServerSecret::from_bytes([3u8; 32]);
        assert_eq!(secret.derive("page-token"), secret.derive("page-token"));
        assert_ne!(secret.derive("page-token"), secret.derive("jwt"));
        assert_ne!(&secret.derive("page-token"), secret.bytes());
        let other = ServerSecret::from_bytes([4u8; 32]);
        assert_ne!(secret.derive("page-token"), other.derive("page-token"));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let secret = ServerSecret::from_bytes([0xab; 32]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
