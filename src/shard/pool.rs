//! The shard's read buffer: every connection of the shard reads into the same
//! chunk, so an idle connection holds no read buffer at all.
//!
//! Each read takes the bytes it filled off the front of the chunk (`split_to`:
//! no copy), and the decoder slices payloads out of them (no copy either). A chunk
//! is freed when the last message referring to it is gone; a new one is taken
//! when the current one runs low. Only the tail of a partial packet stays with its
//! connection, copied out of the chunk so that it pins nothing.
//!
//! # Invariants
//! - The chunk is always fully initialised (`len == capacity`): reads go into
//!   `&mut [u8]` without `unsafe`.
//! - At least [`READ_MIN`] bytes are offered to every read.

use bytes::BytesMut;

/// The size of a chunk: large enough for a pass of a busy connection in one read.
const CHUNK: usize = 64 * 1024;

/// The least room offered to one read; below it a fresh chunk is taken.
const READ_MIN: usize = 4 * 1024;

/// One shard's read chunk.
#[derive(Debug, Default)]
pub(crate) struct ReadPool {
    chunk: BytesMut,
    /// Chunks taken so far (a counter for the figures).
    pub chunks: u64,
}

impl ReadPool {
    /// Room for the next read.
    pub fn room(&mut self) -> &mut [u8] {
        if self.chunk.len() < READ_MIN {
            self.chunk = BytesMut::zeroed(CHUNK);
            self.chunks += 1;
        }
        &mut self.chunk[..]
    }

    /// Takes the `n` bytes the last read filled at the front of [`ReadPool::room`].
    pub fn take(&mut self, n: usize) -> BytesMut {
        debug_assert!(n <= self.chunk.len());
        self.chunk.split_to(n)
    }
}

/// The read state of one connection: bytes read and not yet processed.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: BytesMut,
    /// Whether `bytes` is a view of the shard's chunk (and pins it).
    pooled: bool,
}

impl Tail {
    /// A tail holding `bytes` (its own allocation).
    pub fn from_owned(bytes: BytesMut) -> Self {
        Tail { bytes, pooled: false }
    }

    /// Adds bytes just read from the pool.
    pub fn push(&mut self, read: BytesMut) {
        if self.bytes.is_empty() {
            self.bytes = read;
            self.pooled = true;
        } else {
            // A partial packet waits: its continuation is appended (a copy of the
            // new bytes only, as rare as packets split across reads).
            self.bytes.extend_from_slice(&read);
        }
    }

    pub fn bytes(&mut self) -> &mut BytesMut {
        &mut self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// After processing: release the chunk. An empty view still pins its chunk,
    /// and a partial packet must not keep 64 KiB alive while it waits.
    pub fn settle(&mut self) {
        if self.bytes.is_empty() {
            self.bytes = BytesMut::new();
            self.pooled = false;
        } else if self.pooled {
            self.bytes = BytesMut::from(&self.bytes[..]);
            self.pooled = false;
        }
    }

    /// The unprocessed bytes, for a hand-off.
    pub fn into_bytes(self) -> BytesMut {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_share_a_chunk_and_a_settled_tail_owns_its_bytes() {
        let mut pool = ReadPool::default();
        let room = pool.room();
        room[..5].copy_from_slice(b"hello");
        let read = pool.take(5);
        assert_eq!(pool.chunks, 1);
        let mut tail = Tail::default();
        tail.push(read);
        assert!(tail.pooled);
        tail.settle();
        assert!(!tail.pooled, "a partial packet is copied out of the chunk");
        assert_eq!(&tail.bytes()[..], b"hello");
        let room = pool.room();
        room[..3].copy_from_slice(b" yo");
        tail.push(pool.take(3));
        assert_eq!(&tail.bytes()[..], b"hello yo");
        tail.bytes().clear();
        tail.settle();
        assert_eq!(tail.bytes().capacity(), 0, "an empty tail holds no allocation");
    }
}
