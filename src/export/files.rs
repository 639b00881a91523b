//! The files of an export: where a key goes (a path that stays inside the export), each file
//! written with its running sha256, and the progress said on stderr.

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A key as a relative path that stays inside the export: every byte but `[A-Za-z0-9._-]`
/// percent-encoded, segments `.`, `..` and empty ones encoded too, and the object's own name
/// ending in `~` (no directory name can), so `a` and `a/b` never collide.
pub fn safe_path(key: &str) -> PathBuf {
    let segs: Vec<&str> = key.split('/').collect();
    let mut out = PathBuf::new();
    for (i, seg) in segs.iter().enumerate() {
        let mut s = String::new();
        match *seg {
            "" => s.push_str("%E"),
            "." | ".." => s.push_str(&"%2E".repeat(seg.len())),
            _ => {
                for b in seg.bytes() {
                    if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
                        s.push(b as char);
                    } else {
                        s.push_str(&format!("%{b:02X}"));
                    }
                }
            }
        }
        if s.len() > 200 {
            s = format!("%H{}", hex(&Sha256::digest(seg.as_bytes())));
        }
        if i + 1 == segs.len() {
            s.push('~');
        }
        out.push(s);
    }
    out
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file being written, with its running sha256 and size.
pub(super) struct Hashed {
    file: std::io::BufWriter<std::fs::File>,
    sha: Sha256,
    bytes: u64,
}

impl Hashed {
    pub(super) fn create(path: &Path) -> Result<Hashed> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Hashed {
            file: std::io::BufWriter::new(file),
            sha: Sha256::new(),
            bytes: 0,
        })
    }

    pub(super) fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sha.update(b);
        self.bytes += b.len() as u64;
        self.file.write_all(b)
    }

    pub(super) fn finish(mut self) -> Result<(String, u64)> {
        self.file.flush()?;
        Ok((hex(&self.sha.finalize()), self.bytes))
    }
}

/// Running totals, said on stderr every two seconds.
pub(super) struct Progress {
    pub(super) rows: u64,
    pub(super) objects: u64,
    pub(super) bytes: u64,
    pub(super) said: std::time::Instant,
}

impl Progress {
    pub(super) fn tick(&mut self) {
        if self.said.elapsed() >= std::time::Duration::from_secs(2) {
            eprintln!(
                "export: {} rows, {} objects, {} bytes so far",
                self.rows, self.objects, self.bytes
            );
            self.said = std::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_path;

    #[test]
    fn every_key_stays_inside_and_a_file_never_meets_a_directory() {
        assert_eq!(
            safe_path("runs/1/model.bin").to_str().unwrap(),
            "runs/1/model.bin~"
        );
        assert_eq!(safe_path("runs/1").to_str().unwrap(), "runs/1~");
        assert_eq!(
            safe_path("../../etc/passwd").to_str().unwrap(),
            "%2E%2E/%2E%2E/etc/passwd~"
        );
        assert_eq!(safe_path("/a//b\\c").to_str().unwrap(), "%E/a/%E/b%5Cc~");
        assert_eq!(safe_path("a~").to_str().unwrap(), "a%7E~");
    }
}
