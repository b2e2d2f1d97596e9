//! What the benchmark's volumes hold: one large file, one small file, or many small files
//! spread over directories like an application's tree. Content is pseudo-random, so no
//! filesystem can shortcut it (no zero pages, no compression gains).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

pub struct Content {
    /// Short name used in volume and snapshot names.
    pub tag: &'static str,
    pub label: String,
    pub bytes: u64,
    files: usize,
}

/// xorshift64: cheap bytes that do not repeat.
fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Files per directory in the many-files content.
const PER_DIR: usize = 100;

impl Content {
    pub fn one_file(tag: &'static str, bytes: u64) -> Self {
        Content {
            tag,
            label: format!("{tag}: {} MiB in 1 file", bytes >> 20),
            bytes,
            files: 1,
        }
    }

    /// `files` files of 1 to 8 KiB.
    pub fn many_files(tag: &'static str, files: usize) -> Self {
        let bytes = (0..files).map(|i| Self::small_size(i) as u64).sum();
        Content {
            tag,
            label: format!("{tag}: {files} files, {} MiB", bytes >> 20),
            bytes,
            files,
        }
    }

    fn small_size(i: usize) -> usize {
        1024 * (1 + i % 8)
    }

    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        if self.files == 1 {
            let mut f = fs::File::create(dir.join("data"))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut left = self.bytes as usize;
            while left > 0 {
                let n = left.min(buf.len());
                fill(&mut buf[..n], &mut seed);
                f.write_all(&buf[..n])?;
                left -= n;
            }
            return Ok(());
        }
        let mut buf = vec![0u8; 8 << 10];
        for i in 0..self.files {
            let sub = dir.join(format!("d{:03}", i / PER_DIR));
            if i % PER_DIR == 0 {
                fs::create_dir(&sub)?;
            }
            let n = Self::small_size(i);
            fill(&mut buf[..n], &mut seed);
            fs::write(sub.join(format!("f{i:05}")), &buf[..n])?;
        }
        Ok(())
    }
}
