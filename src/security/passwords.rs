//! Password files, in Mosquitto's `password_file` format.
//!
//! One user per line, `username:hash`; blank lines and lines whose first non-blank
//! character is `#` are ignored; blanks around either field are dropped. A user may
//! appear once. The hash field is one of:
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, written by Mosquitto 2.0 and
//!   2.1, and here with `shardmq passwd --pbkdf2`.
//! - `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt, written by
//!   Mosquitto 1.x. Read only.
//! - `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`: argon2id as a PHC
//!   string, written by Mosquitto 2.1, and here by default.
//!
//! In `$7$` and `$6$` the salt (12 bytes from Mosquitto 2.0, 64 from 2.1) and the
//! 64-byte hash are standard base64 with padding; in the PHC string they are base64
//! without padding, as the PHC format says. Plain-text passwords (a field without `$`)
//! are refused, as Mosquitto 2 refuses them.
//!
//! ```text
//! # written by mosquitto_passwd 2.0
//! alice:$7$101$9v96jZIv3QIqbi9I$aejpxDS2ScrJP2hVLzt6...rYOLw==
//! # written by shardmq passwd
//! bob:$argon2id$v=19$m=19456,t=2,p=1$ymHSz2AJGcNcyWFZoJRn0Q$NIKgN5HERJ9PEeGyF+dj...
//! ```
//!
//! Hashes are compared in constant time. A verification costs what the scheme makes
//! it cost: [`PasswordHash::is_slow`] tells the broker which ones to run off the shard
//! thread. New hashes take their salt from the operating system's random source.
//!
//! [`set_password`] and [`delete_user`] rewrite a file through a temporary file in the
//! same directory and a rename, so a broker reloading it reads the old file or the new
//! one, never a mix; every other line, comments included, is kept as it was.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ahash::RandomState;
use argon2::{Algorithm, Argon2, Params, Version};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, Engine, GeneralPurpose, GeneralPurposeConfig};
use hashbrown::HashMap;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::{read_file, syntax, SecurityError};

/// Standard base64, padded on output; on input with or without padding (files edited
/// by hand or by other tools drop it).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The PHC string's base64: standard alphabet, no padding; padding tolerated on input.
const BASE64_PHC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Length of a SHA-512 digest, the hash of `$6$` and `$7$` lines.
const SHA512_LEN: usize = 64;

/// Salt of new `$7$` hashes: 12 bytes, what Mosquitto 2.0 writes and the only length
/// besides 64 that it reads.
const PBKDF2_SALT_LEN: usize = 12;

/// Salt lengths Mosquitto accepts in `$6$` and `$7$` lines (2.0 writes 12, 2.1 writes 64).
const SHA512_SALT_LENS: [usize; 2] = [12, 64];

/// PBKDF2 iterations up to which a verification stays under about 100 µs: one
/// iteration (two SHA-512 compressions) measured 0.5 µs on the 2-vCPU test VM (101
/// iterations 52 µs, 1,000 iterations 524 µs), so Mosquitto 2.0's 101 is fast and
/// 2.1's 1,000 is not.
const PBKDF2_FAST_ITERATIONS_MAX: u32 = 200;

/// OWASP's argon2id parameters (Password Storage Cheat Sheet): 19 MiB, 2 passes, 1 lane.
const ARGON2_M_COST: u32 = 19 * 1024;
const ARGON2_T_COST: u32 = 2;
const ARGON2_P_COST: u32 = 1;
/// Salt and output of new argon2id hashes: the lengths the argon2 crate recommends (16
/// and 32 bytes).
const ARGON2_SALT_LEN: usize = argon2::RECOMMENDED_SALT_LEN;
const ARGON2_OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

/// The most memory an argon2id line may ask for, in KiB (1 GiB). A verification
/// allocates it; a mistyped `m=` must not take the broker's memory with it.
const ARGON2_M_COST_MAX: u32 = 1024 * 1024;

/// The longest username: an MQTT string's length travels in 16 bits.
const USERNAME_LEN_MAX: usize = u16::MAX as usize;

/// The users of a password file and their hashes.
#[derive(Clone, Default)]
pub struct PasswordFile {
    users: HashMap<Box<str>, PasswordHash, RandomState>,
}

impl fmt::Debug for PasswordFile {
    /// The number of users only: the names are not secret, but a file can hold many.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile").field("users", &self.users.len()).finish()
    }
}

impl PasswordFile {
    /// Reads the password file at `path`; errors name the file and the line.
    pub fn load(path: &Path) -> Result<PasswordFile, SecurityError> {
        PasswordFile::parse(&read_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Reads a password file's text; errors name the line.
    pub fn parse(text: &str) -> Result<PasswordFile, SecurityError> {
        let mut users = HashMap::default();
        for (index, line) in text.lines().enumerate() {
            let Some((username, field)) = user_line(line) else { continue };
            let username = username.ok_or_else(|| syntax(index, "expected `username:hash`"))?;
            check_username(username).map_err(|e| syntax(index, e.to_string()))?;
            let hash = PasswordHash::parse(field)
                .map_err(|e| syntax(index, format!("user `{username}`: {e}")))?;
            if users.insert(Box::from(username), hash).is_some() {
                return Err(syntax(index, format!("user `{username}` appears twice")));
            }
        }
        Ok(PasswordFile { users })
    }

    /// The hash of `username`, if the file has that user.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Splits a line into its username and hash field (both trimmed): `None` for blank and
/// comment lines, `Some((None, line))` for a line without `:`.
fn user_line(line: &str) -> Option<(Option<&str>, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(match line.split_once(':') {
        Some((username, field)) => (Some(username.trim()), field.trim()),
        None => (None, line),
    })
}

/// Checks that `username` can be written to a password file and read back as itself:
/// not empty, no `:`, no control characters, no blanks around it, no leading `#`, at
/// most 65535 bytes. [`set_password`] and [`delete_user`] check it too; a command asks
/// first, before the password.
pub fn check_username(username: &str) -> Result<(), SecurityError> {
    let reason = if username.is_empty() {
        "a username may not be empty"
    } else if username.contains(':') {
        "a username may not contain `:` (it ends the username in the file)"
    } else if username.chars().any(char::is_control) {
        "a username may not contain control characters (a line break would split its line)"
    } else if username.trim() != username {
        "a username may not begin or end with blanks (the file's fields are trimmed)"
    } else if username.starts_with('#') {
        "a username may not begin with `#` (its line would be a comment)"
    } else if username.len() > USERNAME_LEN_MAX {
        "a username is at most 65535 bytes long"
    } else {
        return Ok(());
    };
    Err(SecurityError::Username(reason))
}

/// One user's password hash, as read from (or written to) a password file.
#[derive(Clone)]
pub struct PasswordHash(Scheme);

#[derive(Clone)]
enum Scheme {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 { iterations: NonZeroU32, salt: Box<[u8]>, hash: [u8; SHA512_LEN] },
    /// `$6$`: SHA-512 of the password followed by the salt.
    Sha512 { salt: Box<[u8]>, hash: [u8; SHA512_LEN] },
    /// `$argon2id$`; `params` holds the output length, which is `hash.len()`.
    Argon2id { version: Version, params: Params, salt: Box<[u8]>, hash: Box<[u8]> },
}

impl fmt::Debug for PasswordHash {
    /// The scheme and its cost; never the salt or the hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Scheme::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash(pbkdf2-sha512, {iterations} iterations)")
            }
            Scheme::Sha512 { .. } => f.write_str("PasswordHash(sha512)"),
            Scheme::Argon2id { version, params, .. } => write!(
                f,
                "PasswordHash(argon2id, v={}, m={}, t={}, p={})",
                u32::from(*version),
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            ),
        }
    }
}

impl PasswordHash {
    /// Reads the hash field of a password file line (see the module docs for the
    /// formats). The error says what is wrong, never what the field holds.
    pub fn parse(field: &str) -> Result<PasswordHash, SecurityError> {
        let scheme = if let Some(rest) = field.strip_prefix("$7$") {
            parse_pbkdf2(rest)?
        } else if let Some(rest) = field.strip_prefix("$6$") {
            parse_sha512(rest)?
        } else if let Some(rest) = field.strip_prefix("$argon2id$") {
            parse_argon2id(rest)?
        } else if field.starts_with("$argon2i$") || field.starts_with("$argon2d$") {
            return Err(SecurityError::Hash("argon2i and argon2d are not read, only argon2id"));
        } else if field.starts_with('$') {
            return Err(SecurityError::Hash("unknown scheme (read: $7$, $6$, $argon2id$)"));
        } else {
            return Err(SecurityError::Hash(
                "not a hash: plain-text passwords are not read (`shardmq passwd` writes hashes)",
            ));
        };
        Ok(PasswordHash(scheme))
    }

    /// Whether `password` is the one this hash was made from. Constant time in the
    /// hash comparison; the cost of the scheme itself is the point of the scheme.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.0 {
            Scheme::Pbkdf2Sha512 { iterations, salt, hash } => {
                let mut out = [0; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations.get(), &mut out);
                out.ct_eq(hash).into()
            }
            Scheme::Sha512 { salt, hash } => {
                let out = Sha512::new().chain_update(password).chain_update(salt).finalize();
                out.as_slice().ct_eq(hash).into()
            }
            Scheme::Argon2id { version, params, salt, hash } => {
                let mut out = vec![0; hash.len()];
                let argon2 = Argon2::new(Algorithm::Argon2id, *version, params.clone());
                // Parsing checked the lengths and costs; what is left to fail is the
                // allocation of `m` KiB, and then no password is right.
                argon2.hash_password_into(password, salt, &mut out).is_ok()
                    && bool::from(out.as_slice().ct_eq(hash))
            }
        }
    }

    /// Whether verify() costs more than about 100 µs (argon2, or PBKDF2 with many
    /// iterations), so the broker runs it off the shard thread.
    pub fn is_slow(&self) -> bool {
        match &self.0 {
            Scheme::Pbkdf2Sha512 { iterations, .. } => {
                iterations.get() > PBKDF2_FAST_ITERATIONS_MAX
            }
            Scheme::Sha512 { .. } => false,
            Scheme::Argon2id { .. } => true,
        }
    }

    /// A new argon2id hash of `password` with OWASP's parameters (m=19456 KiB, t=2,
    /// p=1), a 16-byte random salt and a 32-byte output, as Mosquitto 2.1 reads it.
    ///
    /// # Panics
    ///
    /// If the operating system has no random source, or the 19 MiB the hash works in
    /// cannot be allocated.
    pub fn argon2id(password: &[u8]) -> PasswordHash {
        let params = Params::new(ARGON2_M_COST, ARGON2_T_COST, ARGON2_P_COST, None)
            .expect("OWASP's parameters are within argon2's bounds");
        let salt = random_salt(ARGON2_SALT_LEN);
        let mut hash = vec![0; ARGON2_OUTPUT_LEN].into_boxed_slice();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into(password, &salt, &mut hash)
            .expect("the salt and output lengths are within argon2's bounds and 19 MiB is free");
        PasswordHash(Scheme::Argon2id { version: Version::V0x13, params, salt, hash })
    }

    /// A new PBKDF2-HMAC-SHA512 hash of `password` (a `$7$` line, which Mosquitto 2.0
    /// reads too), with a 12-byte random salt.
    ///
    /// # Panics
    ///
    /// If `iterations` is 0 (callers check what users type), or the operating system
    /// has no random source.
    pub fn pbkdf2_sha512(password: &[u8], iterations: u32) -> PasswordHash {
        let iterations = NonZeroU32::new(iterations).expect("PBKDF2 needs at least 1 iteration");
        let salt = random_salt(PBKDF2_SALT_LEN);
        let mut hash = [0; SHA512_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations.get(), &mut hash);
        PasswordHash(Scheme::Pbkdf2Sha512 { iterations, salt, hash })
    }

    /// The file field, e.g. `"$argon2id$v=19$..."`; [`PasswordHash::parse`] reads it
    /// back as the same hash.
    pub fn encode(&self) -> String {
        match &self.0 {
            Scheme::Pbkdf2Sha512 { iterations, salt, hash } => {
                format!("$7${iterations}${}${}", BASE64.encode(salt), BASE64.encode(hash))
            }
            Scheme::Sha512 { salt, hash } => {
                format!("$6${}${}", BASE64.encode(salt), BASE64.encode(hash))
            }
            Scheme::Argon2id { version, params, salt, hash } => format!(
                "$argon2id$v={}$m={},t={},p={}${}${}",
                u32::from(*version),
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                BASE64_PHC.encode(salt),
                BASE64_PHC.encode(hash)
            ),
        }
    }
}

/// `<iterations>$<salt>$<hash>`, after `$7$`.
fn parse_pbkdf2(rest: &str) -> Result<Scheme, SecurityError> {
    let [iterations, salt, hash] = fields(rest)?;
    let iterations = iterations
        .parse::<NonZeroU32>()
        .map_err(|_| SecurityError::Hash("$7$ iterations are not a number from 1 to 4294967295"))?;
    let salt = decode_sha512_salt(salt)?;
    let hash = decode_sha512_hash(hash)?;
    Ok(Scheme::Pbkdf2Sha512 { iterations, salt, hash })
}

/// `<salt>$<hash>`, after `$6$`.
fn parse_sha512(rest: &str) -> Result<Scheme, SecurityError> {
    let [salt, hash] = fields(rest)?;
    Ok(Scheme::Sha512 { salt: decode_sha512_salt(salt)?, hash: decode_sha512_hash(hash)? })
}

/// `[v=<version>$]m=<m>,t=<t>,p=<p>$<salt>$<hash>`, after `$argon2id$`. Without `v=`
/// the version is 16, as in the reference implementation.
fn parse_argon2id(rest: &str) -> Result<Scheme, SecurityError> {
    let (version, rest) = match rest.strip_prefix("v=") {
        Some(rest) => {
            let (version, rest) = rest.split_once('$').unwrap_or((rest, ""));
            let version = match version {
                "19" => Version::V0x13,
                "16" => Version::V0x10,
                _ => return Err(SecurityError::Hash("argon2id version is neither 19 nor 16")),
            };
            (version, rest)
        }
        None => (Version::V0x10, rest),
    };
    let [costs, salt, hash] = fields(rest)?;
    let (mut m, mut t, mut p) = (None, None, None);
    for pair in costs.split(',') {
        let (slot, value) = match pair.split_once('=') {
            Some(("m", value)) => (&mut m, value),
            Some(("t", value)) => (&mut t, value),
            Some(("p", value)) => (&mut p, value),
            _ => return Err(SecurityError::Hash("argon2id parameters other than m, t, p")),
        };
        let value = value
            .parse::<u32>()
            .map_err(|_| SecurityError::Hash("argon2id m, t or p is not a number"))?;
        if slot.replace(value).is_some() {
            return Err(SecurityError::Hash("argon2id m, t or p given twice"));
        }
    }
    let (Some(m), Some(t), Some(p)) = (m, t, p) else {
        return Err(SecurityError::Hash("argon2id needs m, t and p"));
    };
    if m > ARGON2_M_COST_MAX {
        return Err(SecurityError::Hash("argon2id memory (m) above 1 GiB"));
    }
    let salt = decode(&BASE64_PHC, salt, "argon2id salt is not base64")?;
    let hash = decode(&BASE64_PHC, hash, "argon2id hash is not base64")?;
    if salt.len() < argon2::MIN_SALT_LEN {
        return Err(SecurityError::Hash("argon2id salt shorter than 8 bytes"));
    }
    let params = Params::new(m, t, p, Some(hash.len()))
        .map_err(|_| SecurityError::Hash("argon2id m, t, p or hash length out of range"))?;
    Ok(Scheme::Argon2id { version, params, salt, hash })
}

/// Exactly `N` fields separated by `$`.
fn fields<const N: usize>(rest: &str) -> Result<[&str; N], SecurityError> {
    let mut fields = [""; N];
    let mut split = rest.split('$');
    for field in &mut fields {
        *field = split.next().ok_or(SecurityError::Hash("too few `$`-separated fields"))?;
    }
    match split.next() {
        Some(_) => Err(SecurityError::Hash("too many `$`-separated fields")),
        None => Ok(fields),
    }
}

fn decode(
    engine: &GeneralPurpose,
    text: &str,
    error: &'static str,
) -> Result<Box<[u8]>, SecurityError> {
    engine.decode(text).map(Vec::into_boxed_slice).map_err(|_| SecurityError::Hash(error))
}

fn decode_sha512_salt(text: &str) -> Result<Box<[u8]>, SecurityError> {
    let salt = decode(&BASE64, text, "salt is not base64")?;
    if !SHA512_SALT_LENS.contains(&salt.len()) {
        return Err(SecurityError::Hash("salt is neither 12 nor 64 bytes long"));
    }
    Ok(salt)
}

fn decode_sha512_hash(text: &str) -> Result<[u8; SHA512_LEN], SecurityError> {
    let hash = decode(&BASE64, text, "hash is not base64")?;
    <[u8; SHA512_LEN]>::try_from(&*hash)
        .map_err(|_| SecurityError::Hash("hash is not 64 bytes long (SHA-512)"))
}

/// `len` bytes from the operating system's random source.
fn random_salt(len: usize) -> Box<[u8]> {
    let mut salt = vec![0; len].into_boxed_slice();
    getrandom::fill(&mut salt).expect("the operating system provides random bytes");
    salt
}

/// Adds or replaces `username` in the file at `path` (created if missing, mode 0600),
/// keeping every other line (comments included) as it is; written to a temporary file in
/// the same directory and renamed, so a broker reading it never sees half a file.
///
/// The user's line stays where it was; a new user goes at the end. A file that held
/// the user twice (which [`PasswordFile::load`] refuses) keeps the first line only. An
/// existing file keeps its permissions and, where the process may set them, its owner.
pub fn set_password(path: &Path, username: &str, hash: &PasswordHash) -> Result<(), SecurityError> {
    check_username(username)?;
    let target = resolve(path)?;
    let text = match fs::read_to_string(&target) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(SecurityError::Read { path: target, source }),
    };
    let line = format!("{username}:{}", hash.encode());
    let (text, _) = edit(&text, username, Some(&line));
    replace_file(&target, &text)
}

/// Removes `username`; Ok(false) when it was not there.
///
/// Every other line is kept as it is, and the file is replaced as [`set_password`]
/// replaces it. A file that does not exist is an error (the path is likely wrong).
pub fn delete_user(path: &Path, username: &str) -> Result<bool, SecurityError> {
    check_username(username)?;
    let target = resolve(path)?;
    let text = read_file(&target)?;
    let (text, found) = edit(&text, username, None);
    if found {
        replace_file(&target, &text)?;
    }
    Ok(found)
}

/// The file `path` names: a symbolic link is followed, so the rename replaces the file
/// it points to and the link stays.
fn resolve(path: &Path) -> Result<PathBuf, SecurityError> {
    match fs::canonicalize(path) {
        Ok(target) => Ok(target),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path.to_owned()),
        Err(source) => Err(SecurityError::Read { path: path.to_owned(), source }),
    }
}

/// `text` with the lines of `username` replaced by `line` (or removed when `None`), and
/// whether it had any. A new line goes at the end.
fn edit(text: &str, username: &str, line: Option<&str>) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + line.map_or(0, str::len) + 2);
    let mut found = false;
    for old in text.split_inclusive('\n') {
        if user_line(old).and_then(|(user, _)| user) != Some(username) {
            out.push_str(old);
            continue;
        }
        if let Some(line) = line.filter(|_| !found) {
            out.push_str(line);
            out.push('\n');
        }
        found = true;
    }
    if let Some(line) = line.filter(|_| !found) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, found)
}

/// Replaces `path` with a file holding `text`: a temporary file in the same directory
/// (mode 0600, or the old file's mode and owner), synced, renamed over `path`, and the
/// directory synced, so the new file survives a crash once this returns.
fn replace_file(path: &Path, text: &str) -> Result<(), SecurityError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| SecurityError::Write { path, source }
    };
    let old = match fs::metadata(path) {
        Ok(old) => Some(old),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(SecurityError::Read { path: path.to_owned(), source }),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| SecurityError::Write {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let mut suffix = [0; 8];
    getrandom::fill(&mut suffix).expect("the operating system provides random bytes");
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".{}.{suffix}.tmp", name.to_string_lossy()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(write_error(&temp))?;
    let written = (|| {
        if let Some(old) = &old {
            file.set_permissions(old.permissions())?;
            let new = file.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))?;
            }
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    if let Err(source) = written.and_then(|()| fs::rename(&temp, path)) {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&temp);
        return Err(SecurityError::Write { path: path.to_owned(), source });
    }
    fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(write_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b FILE alice secret` (Mosquitto 2.0.11).
    const MOSQUITTO_2_0: &str = concat!(
        "alice:$7$101$9v96jZIv3QIqbi9I$",
        "aejpxDS2ScrJP2hVLzt6UlYY/adjw+fNOZZYiCs6BvSS3/iFdnYX7k93IqmGM/pE5nT7DcXRikg0dEE4/rYOLw=="
    );
    /// Written by `mosquitto_passwd -H sha512 -c -b FILE bob secret` (Mosquitto 2.0.11).
    const MOSQUITTO_SHA512: &str = concat!(
        "bob:$6$qaCWO+qHBm10XOc9$",
        "7wKHfb7PXc4ImDl1xZ7N2VYucMcgJAVKsJY9Top+PgyQl2uxYxq0JZtxC9+prk0n2HpV4KsXpyF+h9pOVoES7A=="
    );
    /// Mosquitto 2.1's shape (64-byte salt, 1,000 iterations), password `secret`, from
    /// Python's `hashlib.pbkdf2_hmac("sha512", b"secret", bytes(range(64)), 1000)`.
    const MOSQUITTO_2_1: &str = concat!(
        "carol:$7$1000$",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==$",
        "j5aX3DstWRgO5cjjfvKvsf7Z/KK812T4wGDMih+DCHQg8P7++fmj4sZcMp1smkEafZL0QZ29tE5ezahL/nyffw=="
    );
    /// The reference implementation's test vector (phc-winner-argon2 `src/test.c`):
    /// password `password`, salt `somesalt`.
    const ARGON2ID_REFERENCE: &str =
        "dave:$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";

    fn hash_of(line: &str) -> PasswordHash {
        let (_, field) = line.split_once(':').expect("a user line");
        PasswordHash::parse(field).expect("a valid hash")
    }

    /// Checks that `line` verifies `right` only, and that encoding gives the field back.
    fn check_line(line: &str, right: &[u8], slow: bool) {
        let hash = hash_of(line);
        assert!(hash.verify(right), "{line}");
        for wrong in [&b""[..], b"Secret", b"secret ", b"password1", b"secre"] {
            assert!(!hash.verify(wrong), "{line} accepted {wrong:?}");
        }
        assert_eq!(hash.is_slow(), slow, "{hash:?}");
        assert_eq!(format!("{}:{}", line.split(':').next().expect("user"), hash.encode()), line);
    }

    #[test]
    fn mosquitto_2_0_pbkdf2_line_verifies() {
        check_line(MOSQUITTO_2_0, b"secret", false);
    }

    #[test]
    fn mosquitto_1_x_sha512_line_verifies() {
        check_line(MOSQUITTO_SHA512, b"secret", false);
    }

    #[test]
    fn mosquitto_2_1_pbkdf2_line_with_a_64_byte_salt_verifies() {
        check_line(MOSQUITTO_2_1, b"secret", true);
    }

    #[test]
    fn argon2id_reference_vector_verifies() {
        check_line(ARGON2ID_REFERENCE, b"password", true);
    }

    #[test]
    fn new_argon2id_hashes_use_owasp_parameters_and_read_back() {
        let hash = PasswordHash::argon2id(b"s3cret");
        let field = hash.encode();
        assert!(field.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{field}");
        let again = PasswordHash::parse(&field).expect("reads back");
        assert!(again.verify(b"s3cret") && !again.verify(b"s3cre7"));
        assert_eq!(again.encode(), field);
        assert!(hash.is_slow());
        let other = PasswordHash::argon2id(b"s3cret");
        assert_ne!(other.encode(), field, "every hash has its own salt");
    }

    #[test]
    fn new_pbkdf2_hashes_are_what_mosquitto_2_0_reads() {
        let hash = PasswordHash::pbkdf2_sha512(b"s3cret", 101);
        let field = hash.encode();
        let [iterations, salt, digest] = fields::<3>(&field["$7$".len()..]).expect("3 fields");
        assert_eq!(iterations, "101");
        assert_eq!(BASE64.decode(salt).expect("base64").len(), 12);
        assert_eq!(BASE64.decode(digest).expect("base64").len(), 64);
        assert!(salt.len() == 16 && digest.ends_with("=="), "padded base64: {field}");
        let again = PasswordHash::parse(&field).expect("reads back");
        assert!(again.verify(b"s3cret") && !again.verify(b"s3cret\n"));
        assert!(!hash.is_slow() && PasswordHash::pbkdf2_sha512(b"x", 1000).is_slow());
    }

    #[test]
    fn debug_shows_the_scheme_and_cost_never_the_hash() {
        for line in [MOSQUITTO_2_0, MOSQUITTO_SHA512, ARGON2ID_REFERENCE] {
            let field = line.split_once(':').expect("user line").1;
            let debug = format!("{:?}", hash_of(line));
            for secret in field.split(['$', ',']).filter(|part| part.len() > 8) {
                assert!(!debug.contains(secret), "{debug} shows {secret}");
            }
        }
        assert_eq!(
            format!("{:?}", hash_of(MOSQUITTO_2_0)),
            "PasswordHash(pbkdf2-sha512, 101 iterations)"
        );
        assert_eq!(
            format!("{:?}", hash_of(ARGON2ID_REFERENCE)),
            "PasswordHash(argon2id, v=19, m=256, t=2, p=1)"
        );
    }

    #[test]
    fn hash_fields_that_are_refused() {
        let salt = "9v96jZIv3QIqbi9I";
        let digest = concat!(
            "aejpxDS2ScrJP2hVLzt6UlYY/adjw+fNOZZYiCs6BvSS3/",
            "iFdnYX7k93IqmGM/pE5nT7DcXRikg0dEE4/rYOLw=="
        );
        let phc = "c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";
        let cases: &[(String, &str)] = &[
            ("secret".into(), "plain-text passwords are not read"),
            ("".into(), "plain-text"),
            ("$1$abc$def".into(), "unknown scheme"),
            ("$argon2i$v=19$m=256,t=2,p=1$".to_owned() + phc, "only argon2id"),
            (format!("$7$0${salt}${digest}"), "iterations"),
            (format!("$7$-1${salt}${digest}"), "iterations"),
            (format!("$7$101${digest}"), "too few"),
            (format!("$7$101${salt}${digest}$x"), "too many"),
            (format!("$7$101$!!!!${digest}"), "salt is not base64"),
            (format!("$7$101$YWJj${digest}"), "salt is neither 12 nor 64"),
            (format!("$7$101${salt}$YWJj"), "not 64 bytes"),
            (format!("$6${salt}$YWJj"), "not 64 bytes"),
            (format!("$argon2id$v=18$m=256,t=2,p=1${phc}"), "version"),
            (format!("$argon2id$v=19$m=256,t=2${phc}"), "needs m, t and p"),
            (format!("$argon2id$v=19$m=256,t=2,p=1,keyid=YQ${phc}"), "other than m, t, p"),
            (format!("$argon2id$v=19$m=256,m=256,t=2,p=1${phc}"), "twice"),
            (format!("$argon2id$v=19$m=x,t=2,p=1${phc}"), "not a number"),
            (format!("$argon2id$v=19$m=2000000,t=2,p=1${phc}"), "above 1 GiB"),
            (format!("$argon2id$v=19$m=256,t=0,p=1${phc}"), "out of range"),
            ("$argon2id$v=19$m=256,t=2,p=1$YWJj$nf65EOgLrQMR".into(), "shorter than 8"),
        ];
        for (field, expected) in cases {
            let error = PasswordHash::parse(field).expect_err(field).to_string();
            assert!(error.contains(expected), "{field}: {error}");
            // The error says what is wrong, never what the field holds.
            assert!(!error.contains(digest) && !error.contains(salt), "{error}");
        }
    }

    #[test]
    fn argon2id_without_a_version_is_version_16() {
        let hash =
            PasswordHash::parse("$argon2id$m=256,t=2,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA")
                .expect("valid");
        assert!(hash.encode().starts_with("$argon2id$v=16$m=256,t=2,p=1$"));
    }

    #[test]
    fn files_skip_comments_and_blank_lines_and_trim_fields() {
        let bob = MOSQUITTO_SHA512.replacen(':', " :\t", 1);
        let text = format!(
            "# users\n\n  \t\n{MOSQUITTO_2_0}\r\n   # indented\n  {bob}  \n{ARGON2ID_REFERENCE}"
        );
        let file = PasswordFile::parse(&text).expect("valid file");
        assert_eq!(file.len(), 3);
        assert!(file.get("alice").expect("alice").verify(b"secret"));
        assert!(file.get("bob").expect("bob").verify(b"secret"));
        assert!(file.get("dave").expect("dave").verify(b"password"));
        assert!(file.get("carol").is_none() && file.get("alice ").is_none());
        assert!(PasswordFile::parse("# nothing\n").expect("valid").is_empty());
        assert_eq!(format!("{file:?}"), "PasswordFile { users: 3 }");
    }

    #[test]
    fn file_errors_name_the_line_and_the_user() {
        let cases: &[(String, &str)] = &[
            (format!("# a\n{MOSQUITTO_2_0}\nbob"), "line 3: expected `username:hash`"),
            (format!("{MOSQUITTO_2_0}\n\n{MOSQUITTO_2_0}"), "line 3: user `alice` appears twice"),
            ("\n:$7$1$x$y".into(), "line 2: invalid username: a username may not be empty"),
            ("eve:plain".into(), "line 1: user `eve`: invalid password hash: not a hash"),
            ("eve:$7$101$x$y".into(), "line 1: user `eve`: invalid password hash: salt"),
        ];
        for (text, expected) in cases {
            let error = PasswordFile::parse(text).expect_err(text).to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn usernames_that_cannot_be_written() {
        let long = "u".repeat(USERNAME_LEN_MAX + 1);
        let cases = [
            ("", "may not be empty"),
            ("a:b", "may not contain `:`"),
            ("a\nb", "control characters"),
            (" a", "blanks"),
            ("a\t", "control characters"),
            ("a ", "blanks"),
            ("#a", "comment"),
            (long.as_str(), "65535"),
        ];
        for (username, expected) in cases {
            let error = check_username(username).expect_err(username).to_string();
            assert!(error.contains(expected), "{username:?}: {error}");
        }
        for fine in ["a", "a b", "a#", "\u{e9}t\u{e9}", "$SYS", "user@example.com"] {
            assert!(check_username(fine).is_ok(), "{fine:?}");
        }
    }

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("shardmq-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("temporary directory");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn set_password_creates_a_private_file_then_edits_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("set-password");
        let path = dir.0.join("passwd");
        let mode = |path: &Path| fs::metadata(path).expect("exists").permissions().mode() & 0o777;

        set_password(&path, "alice", &PasswordHash::pbkdf2_sha512(b"one", 2)).expect("created");
        assert_eq!(mode(&path), 0o600);
        let file = PasswordFile::load(&path).expect("loads");
        assert!(file.get("alice").expect("alice").verify(b"one"));

        // Hand-edited: comments, a line without a final newline, a looser mode.
        let alice = fs::read_to_string(&path).expect("readable");
        fs::write(&path, format!("# admins\n{alice}\n# devices\n{MOSQUITTO_SHA512}"))
            .expect("writable");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");

        set_password(&path, "carol", &PasswordHash::pbkdf2_sha512(b"three", 2)).expect("added");
        set_password(&path, "alice", &PasswordHash::pbkdf2_sha512(b"two", 2)).expect("changed");
        assert_eq!(mode(&path), 0o640, "an existing file keeps its mode");
        let text = fs::read_to_string(&path).expect("readable");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            (lines[0], lines[2], lines[3], lines[4]),
            ("# admins", "", "# devices", MOSQUITTO_SHA512)
        );
        assert!(lines[1].starts_with("alice:$7$2$") && lines[5].starts_with("carol:$7$2$"));
        let file = PasswordFile::load(&path).expect("loads");
        assert!(file.get("alice").expect("alice").verify(b"two"));
        assert!(!file.get("alice").expect("alice").verify(b"one"));
        assert!(file.get("carol").expect("carol").verify(b"three"));
        assert!(file.get("bob").expect("bob").verify(b"secret"));

        assert!(delete_user(&path, "alice").expect("deleted"));
        assert!(!delete_user(&path, "alice").expect("already gone"));
        let file = PasswordFile::load(&path).expect("loads");
        assert_eq!((file.len(), file.get("alice").is_none()), (2, true));
        assert!(fs::read_to_string(&path)
            .expect("readable")
            .starts_with("# admins\n\n# devices\n"));

        let leftovers: Vec<_> = fs::read_dir(&dir.0).expect("listable").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn editing_refuses_bad_usernames_and_missing_files() {
        let dir = TempDir::new("edit-errors");
        let path = dir.0.join("passwd");
        let hash = PasswordHash::pbkdf2_sha512(b"x", 1);
        let error = set_password(&path, "a:b", &hash).expect_err("colon").to_string();
        assert_eq!(
            error,
            "invalid username: a username may not contain `:` (it ends the username in the file)"
        );
        assert!(!path.exists(), "nothing written");
        let error = delete_user(&path, "alice").expect_err("no file").to_string();
        assert!(error.starts_with(&format!("cannot read {}: ", path.display())), "{error}");
        let missing_dir = dir.0.join("missing").join("passwd");
        let error = set_password(&missing_dir, "alice", &hash).expect_err("no dir").to_string();
        assert!(error.starts_with("cannot write "), "{error}");
    }

    #[test]
    fn load_errors_name_the_file_and_line() {
        let dir = TempDir::new("load-errors");
        let path = dir.0.join("passwd");
        fs::write(&path, format!("{MOSQUITTO_2_0}\nbob:secret\n")).expect("writable");
        let error = PasswordFile::load(&path).expect_err("plain text").to_string();
        assert!(error.starts_with(&format!("{}:2: user `bob`: ", path.display())), "{error}");
        let error = PasswordFile::load(&dir.0.join("none")).expect_err("missing").to_string();
        assert!(error.starts_with("cannot read "), "{error}");
    }
}
