//! The cluster secret (`--cluster-secret-file`): every node of a cluster shares it,
//! and a node that does not know it can neither join nor feed a node anything.
//!
//! - **Membership datagrams** carry a tag: the first [`TAG_LEN`] bytes of
//!   HMAC-SHA256 over the datagram. A datagram whose tag does not check is dropped
//!   before foca sees it.
//! - **Node links** start with a challenge: the node that accepts the link sends a
//!   fresh random nonce, and the `Hello` of the node that connected proves the
//!   secret with HMAC-SHA256 over that nonce and the rest of the `Hello`. A proof
//!   cannot be replayed on another link (its nonce differs) nor moved to another
//!   identity (the identity is under the MAC).
//!
//! What it does not do: encrypt. The frames after the `Hello` and the datagrams
//! are readable on the network, and a datagram seen on the wire can be sent again
//! (foca ignores what it already knows). Keep the cluster port on a private
//! network; the secret keeps other processes, and nodes of other clusters, out.
//!
//! Sans-IO: bytes in, bytes out; the nonce comes from the caller.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of the nonce a node accepting a link sends first.
pub const NONCE_LEN: usize = 16;
/// Bytes of the tag at the end of a membership datagram: 128 bits, as truncated
/// HMACs are commonly used.
pub const TAG_LEN: usize = 16;
/// Bytes of the proof in a `Hello`: the whole HMAC-SHA256.
pub const PROOF_LEN: usize = 32;
/// The shortest secret accepted: 128 bits, written as at least 16 characters.
pub const SECRET_MIN: usize = 16;

/// Separate MAC domains, so that a tag of one kind is never valid as another.
const DATAGRAM: &[u8] = b"shardmq cluster datagram\0";
const LINK: &[u8] = b"shardmq cluster link\0";

/// The keyed MAC of a cluster's shared secret.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key of a secret file's contents: whitespace around it (a final newline)
    /// is not part of it. Errors say what is wrong, never the secret.
    pub fn from_secret(contents: &[u8]) -> Result<ClusterKey, String> {
        let secret = contents.trim_ascii();
        if secret.len() < SECRET_MIN {
            return Err(format!(
                "the cluster secret has {} bytes; it needs at least {SECRET_MIN} (for example \
                 the output of `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(ClusterKey { mac })
    }

    fn keyed(&self, domain: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(domain);
        mac
    }

    /// An outgoing membership datagram with its tag.
    pub fn seal(&self, datagram: &[u8]) -> Vec<u8> {
        let mut mac = self.keyed(DATAGRAM);
        mac.update(datagram);
        let tag = mac.finalize().into_bytes();
        [datagram, &tag[..TAG_LEN]].concat()
    }

    /// The datagram without its tag, if the tag checks (in constant time).
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let body_len = datagram.len().checked_sub(TAG_LEN)?;
        let (body, tag) = datagram.split_at(body_len);
        let mut mac = self.keyed(DATAGRAM);
        mac.update(body);
        mac.verify_truncated_left(tag).ok().map(|()| body)
    }

    /// The proof a connecting node puts in its `Hello`: the MAC of the accepting
    /// node's nonce and of the `Hello`'s encoding without the proof.
    pub fn link_proof(&self, nonce: &[u8; NONCE_LEN], hello: &[u8]) -> [u8; PROOF_LEN] {
        let mut mac = self.keyed(LINK);
        mac.update(nonce);
        mac.update(hello);
        mac.finalize().into_bytes().into()
    }

    /// Whether `proof` is [`ClusterKey::link_proof`] of `nonce` and `hello` (in
    /// constant time).
    pub fn check_link_proof(&self, nonce: &[u8; NONCE_LEN], hello: &[u8], proof: &[u8]) -> bool {
        let mut mac = self.keyed(LINK);
        mac.update(nonce);
        mac.update(hello);
        mac.verify_slice(proof).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> ClusterKey {
        ClusterKey::from_secret(secret.as_bytes()).expect("a valid secret")
    }

    #[test]
    fn a_short_secret_is_refused_and_surrounding_whitespace_ignored() {
        let e = ClusterKey::from_secret(b"  short-secret \n").expect_err("12 bytes");
        assert!(e.contains("12 bytes") && !e.contains("short-secret"), "{e}");
        let (a, b) = (key("0123456789abcdef\n"), key("0123456789abcdef"));
        assert_eq!(b.open(&a.seal(b"ping")), Some(&b"ping"[..]));
    }

    #[test]
    fn a_datagram_opens_only_whole_and_with_the_same_secret() {
        let k = key("0123456789abcdef0123");
        let d = k.seal(b"foca probe");
        assert_eq!(d.len(), 10 + TAG_LEN);
        assert_eq!(k.open(&d), Some(&b"foca probe"[..]));
        assert_eq!(key("another secret, not ours").open(&d), None);
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert_eq!(k.open(&bad), None, "byte {i} flipped");
        }
        assert_eq!(k.open(&d[..d.len() - 1]), None);
        assert_eq!(k.open(&d[..TAG_LEN - 1]), None, "shorter than a tag");
        assert_eq!(k.open(&k.seal(b"")), Some(&b""[..]));
    }

    #[test]
    fn a_link_proof_is_bound_to_its_nonce_its_hello_and_the_secret() {
        let k = key("0123456789abcdef0123");
        let nonce = [7u8; NONCE_LEN];
        let proof = k.link_proof(&nonce, b"hello a");
        assert!(k.check_link_proof(&nonce, b"hello a", &proof));
        assert!(!k.check_link_proof(&[8u8; NONCE_LEN], b"hello a", &proof), "another link");
        assert!(!k.check_link_proof(&nonce, b"hello b", &proof), "another identity");
        assert!(!key("another secret, not ours").check_link_proof(&nonce, b"hello a", &proof));
        assert!(!k.check_link_proof(&nonce, b"hello a", &proof[..PROOF_LEN - 1]));
        assert!(!k.check_link_proof(&nonce, b"hello a", &[]));
        // A datagram tag is not a link proof, nor the other way round.
        let d = k.seal(&[&nonce[..], b"hello a"].concat());
        assert!(!k.check_link_proof(&nonce, b"hello a", &d[d.len() - TAG_LEN..]));
    }
}
