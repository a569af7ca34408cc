//! Reading and creating audit key files.
//!
//! A key file holds 64 hex characters (a trailing newline is fine). A key is a secret:
//! new files are created with mode 0600 and never overwrite an existing file.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use mmaudit_protocol::keys::Key;

/// Reads a key file; errors name the file and what is wrong with it. Warns on stderr
/// when the file is readable by group or others.
pub fn read_key_file(path: &Path) -> Result<Key> {
    let text = mmaudit_protocol::keys::read_key_text(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let meta =
        fs::metadata(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let key = Key::from_hex(&text)
        .with_context(|| format!("key file {} is malformed", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "mmaudit-verify: warning: key file {} is readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(key)
}

/// 32 bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .context("cannot read /dev/urandom")?;
    Ok(out)
}

/// `mmaudit-verify keygen`: writes a new key to `out` (mode 0600, never overwriting) or stdout.
pub fn keygen(out: Option<&Path>) -> Result<()> {
    let key = Key::from_bytes(random_bytes()?);
    let text = format!("{}\n", key.to_hex());
    match out {
        None => {
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write the key to standard output")?;
        }
        Some(path) => {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create key file {} (an existing file is never overwritten)",
                        path.display()
                    )
                })?;
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write key file {}", path.display()))?;
            eprintln!(
                "mmaudit-verify: wrote a new key (id {:016x}) to {}",
                key.id(),
                path.display()
            );
        }
    }
    Ok(())
}
