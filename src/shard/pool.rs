//! The shard's read chunk: every connection of the shard's received bytes land in
//! the same chunk, so an idle connection holds no read buffer at all.
//!
//! The socket ring receives into provided buffers that go straight back to the
//! kernel; their bytes are copied here (one copy of small packets, cheaper than
//! any syscall) and taken off the front of the chunk (`split`: no copy), and the
//! decoder slices payloads out of them (no copy either). A chunk is freed when the
//! last message referring to it is gone; a new one is taken when the current one
//! has no room. Only the tail of a partial packet stays with its connection,
//! copied out of the chunk so that it pins nothing.

use bytes::BytesMut;

/// One shard's read chunk.
#[derive(Debug)]
pub(crate) struct ReadPool {
    chunk: BytesMut,
    /// The size of a chunk (`read_buffer_bytes`): large enough for a pass of a
    /// busy connection in one read.
    chunk_size: usize,
    /// Chunks taken so far (a counter for the figures).
    pub chunks: u64,
}

impl ReadPool {
    pub fn new(chunk_size: usize) -> Self {
        ReadPool { chunk: BytesMut::new(), chunk_size, chunks: 0 }
    }

    /// Copies bytes just received into the chunk and takes them off its front.
    pub fn copy_in(&mut self, received: &[u8]) -> BytesMut {
        if self.chunk.capacity() - self.chunk.len() < received.len() {
            self.chunk = BytesMut::with_capacity(self.chunk_size.max(received.len()));
            self.chunks += 1;
        }
        self.chunk.extend_from_slice(received);
        self.chunk.split()
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
        let mut pool = ReadPool::new(64 * 1024);
        let read = pool.copy_in(b"hello");
        assert_eq!(pool.chunks, 1);
        let mut tail = Tail::default();
        tail.push(read);
        assert!(tail.pooled);
        tail.settle();
        assert!(!tail.pooled, "a partial packet is copied out of the chunk");
        assert_eq!(&tail.bytes()[..], b"hello");
        tail.push(pool.copy_in(b" yo"));
        assert_eq!(pool.chunks, 1, "one chunk serves many receives");
        assert_eq!(&tail.bytes()[..], b"hello yo");
        tail.bytes().clear();
        tail.settle();
        assert_eq!(tail.bytes().capacity(), 0, "an empty tail holds no allocation");
    }
}
