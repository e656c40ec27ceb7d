//! Files through glommio: [`BlockFile`] (a media file opened for block reads),
//! [`DataFile`] (a cache's direct-I/O data file) and the direct-I/O probe
//! ([`settle_direct_io`]).

use std::io;
use std::path::Path;

use bytes::Bytes;

use super::exec::blocking;

/// A media file opened for block reads: with direct I/O (`O_DIRECT`, the default;
/// tmpfs and some others do not allow it and glommio falls back to buffered reads
/// there), or through the page cache with the kernel's read-ahead
/// (`--buffered-reads`).
pub enum BlockFile {
    Direct(glommio::io::DmaFile),
    Buffered(glommio::io::BufferedFile),
}

impl BlockFile {
    pub async fn open(path: &Path, direct: bool) -> io::Result<BlockFile> {
        if direct {
            let file = glommio::io::DmaFile::open(path)
                .await
                .map_err(io::Error::from)?;
            return Ok(BlockFile::Direct(file));
        }
        let file = glommio::io::BufferedFile::open(path)
            .await
            .map_err(io::Error::from)?;
        // Blocks are read mostly in order: ask for the kernel's larger read-ahead.
        // SAFETY: advice on an fd we hold open; failure only loses the hint.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_SEQUENTIAL,
            )
        };
        Ok(BlockFile::Buffered(file))
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            BlockFile::Direct(f) => f.as_raw_fd(),
            BlockFile::Buffered(f) => f.as_raw_fd(),
        }
    }

    /// The open file's identity now (size, modification time, inode, device), to tell
    /// whether it is still the file its index describes.
    pub fn source_stat(&self) -> io::Result<crate::disk::origin_index::SourceStat> {
        // SAFETY: fstat fills a zeroed stat struct for an fd we hold open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::fstat(self.raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(crate::disk::origin_index::SourceStat {
            size: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
            ino: st.st_ino,
            dev: st.st_dev,
        })
    }

    /// Reads `len` bytes at `offset` (an aligned block start) into an immutable shared
    /// buffer: the one copy from the DMA buffer that lets the block cross shards freely.
    /// A short result means the file shrank.
    pub async fn read_block(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let r = match self {
            BlockFile::Direct(f) => {
                let aligned = (len as u64).div_ceil(4096) * 4096;
                f.read_at_aligned(offset, aligned as usize).await
            }
            BlockFile::Buffered(f) => f.read_at(offset, len).await,
        }
        .map_err(io::Error::from)?;
        let n = r.len().min(len);
        Ok(Bytes::copy_from_slice(&r[..n]))
    }
}

/// Makes this executor's first direct-I/O file on `dir`'s device one that holds data.
///
/// glommio decides once per executor and device whether direct reads go through its
/// poll ring, by reading the start of the first file it opens with direct I/O. An
/// empty file (a cache's new data file) reads "successfully" without touching the
/// device, so the poll ring was turned on for a device that cannot poll, and about
/// half of a cache's disk reads failed with EOPNOTSUPP: every block it had stored was
/// fetched again. A probe file with data gives glommio a real read to decide on.
pub async fn settle_direct_io(dir: &Path) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".p2pd-direct-io-probe-{}-{n}", std::process::id()));
    let p = path.clone();
    blocking(move || -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&p)?;
        f.write_all(&[0x5a; 2 * DIRECT_IO_ALIGN_BYTES as usize])?;
        f.sync_all()
    })
    .await?;
    let opened = glommio::io::DmaFile::open(&path).await;
    if let Ok(f) = opened {
        let _ = f.close().await;
    }
    let p = path.clone();
    blocking(move || std::fs::remove_file(p)).await
}

/// Alignment of direct-I/O offsets and lengths in cache data files.
pub const DIRECT_IO_ALIGN_BYTES: u64 = 4096;

/// A cache's data file, opened read-write with direct I/O: verified blocks are written
/// at `index * block_size` (the last one padded to the alignment), read back, and
/// punched out (the file system frees their space) when evicted.
pub struct DataFile {
    file: glommio::io::DmaFile,
}

impl DataFile {
    /// Opens (creating if missing) a data file.
    pub async fn open(path: &Path) -> io::Result<DataFile> {
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(DataFile { file })
    }

    /// `len` rounded up to the direct-I/O alignment: the bytes a block occupies.
    pub fn aligned(len: usize) -> u64 {
        (len as u64).div_ceil(DIRECT_IO_ALIGN_BYTES) * DIRECT_IO_ALIGN_BYTES
    }

    /// Writes `data` at `offset` (aligned), padded with zeros to the alignment. The
    /// write has completed (reached the device, not a cache of ours) when this returns.
    pub async fn write_block(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let len = Self::aligned(data.len()) as usize;
        let mut buf = self.file.alloc_dma_buffer(len);
        let b = buf.as_bytes_mut();
        b[..data.len()].copy_from_slice(data);
        b[data.len()..].fill(0);
        let n = self
            .file
            .write_at(buf, offset)
            .await
            .map_err(io::Error::from)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes"),
            ));
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` (aligned); a short result means the file is
    /// shorter than the index claims (the caller verifies the digest anyway).
    pub async fn read_block(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let r = self
            .file
            .read_at_aligned(offset, Self::aligned(len) as usize)
            .await
            .map_err(io::Error::from)?;
        let n = r.len().min(len);
        Ok(Bytes::copy_from_slice(&r[..n]))
    }

    /// Frees the space of `len` bytes (rounded up to the alignment) at `offset`.
    pub async fn punch(&self, offset: u64, len: usize) -> io::Result<()> {
        self.file
            .deallocate(offset, Self::aligned(len))
            .await
            .map_err(io::Error::from)
    }
}
