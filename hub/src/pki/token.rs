//! Join tokens, kubeadm's format: `<id>.<secret>`, a 6-character public id and a 16-character
//! secret, both `[a-z0-9]`. The operator prints one with `rke2-hub token create` and gives it
//! to a node with the CA pin; the node presents it once to enroll.
//!
//! The hub stores only [`secret_hash`] of the secret. A plain SHA-256 is enough here, unlike
//! for passwords: the secret is 16 characters drawn uniformly from 36 by the system's random
//! source (about 82.7 bits), so there is no dictionary to precompute and no guess worth
//! slowing down; a salt or a slow KDF would add nothing against a leaked database. The short
//! TTL and single use bound the rest.
//!
//! No `Debug` or `Display` here ever shows a secret; [`JoinToken::expose`] and
//! [`TokenSecret::expose`] are the only ways to read one, and their names say so.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Length of a token id.
pub const ID_LEN: usize = 6;
/// Length of a token secret.
pub const SECRET_LEN: usize = 16;
/// Default lifetime of a new token (kubeadm's default too).
pub const DEFAULT_TTL: Duration = Duration::hours(24);

/// The characters of ids and secrets.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The requested lifetime is zero or negative.
    #[error("join token lifetime must be positive, got {ttl}")]
    NonPositiveTtl {
        /// The requested lifetime.
        ttl: Duration,
    },
    /// The system random source failed.
    #[error("the system random source failed while making a join token")]
    Random,
}

/// Why a text is not a join token. Never contains the text: it may hold a real secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// There is no `.` between id and secret (or more than one).
    #[error("a join token is <6 characters>.<16 characters> of [a-z0-9]; this one has {dots} '.'")]
    Dots {
        /// How many dots the text has.
        dots: usize,
    },
    /// The id (before the `.`) has the wrong length or characters.
    #[error("the join token's id must be 6 characters of [a-z0-9]; it has {len} characters{extra}")]
    Id {
        /// The id's length.
        len: usize,
        /// ", some outside [a-z0-9]" when that is also wrong.
        extra: &'static str,
    },
    /// The secret (after the `.`) has the wrong length or characters.
    #[error(
        "the join token's secret must be 16 characters of [a-z0-9]; it has {len} characters{extra}"
    )]
    Secret {
        /// The secret's length.
        len: usize,
        /// ", some outside [a-z0-9]" when that is also wrong.
        extra: &'static str,
    },
}

/// A token's secret part. `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// The secret itself, e.g. to print it once to the operator. Never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// [`secret_hash`] of this secret: what the store keeps.
    #[must_use]
    pub fn hash(&self) -> String {
        secret_hash(&self.0)
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// A freshly generated join token.
#[derive(Clone)]
pub struct JoinToken {
    /// Public id: how the store, the audit log and operators refer to the token.
    id: String,
    /// The secret: shown to the operator once, stored only as its hash.
    secret: TokenSecret,
    /// After this instant the hub refuses the token.
    expires_at: OffsetDateTime,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl JoinToken {
    /// Makes a token valid for `ttl` from `now`, with id and secret from the system's
    /// random source.
    ///
    /// # Errors
    /// [`TokenError::NonPositiveTtl`]; [`TokenError::Random`] if the random source fails.
    pub fn generate(ttl: Duration, now: OffsetDateTime) -> Result<Self, TokenError> {
        if ttl <= Duration::ZERO {
            return Err(TokenError::NonPositiveTtl { ttl });
        }
        let rng = SystemRandom::new();
        Ok(Self {
            id: random_chars(&rng, ID_LEN)?,
            secret: TokenSecret(random_chars(&rng, SECRET_LEN)?),
            expires_at: now + ttl,
        })
    }

    /// The public id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part.
    #[must_use]
    pub fn secret(&self) -> &TokenSecret {
        &self.secret
    }

    /// When the token stops being accepted.
    #[must_use]
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// The whole token, `<id>.<secret>`, to print once for the operator. Never log it.
    #[must_use]
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret.expose())
    }

    /// Splits a join token into its id and secret. Surrounding whitespace (a newline from a file)
    /// is ignored.
    ///
    /// # Errors
    /// [`TokenFormatError`] saying which part is malformed, without quoting the text.
    pub fn parse(text: &str) -> Result<(String, TokenSecret), TokenFormatError> {
        let text = text.trim();
        let dots = text.matches('.').count();
        let Some((id, secret)) = text.split_once('.').filter(|_| dots == 1) else {
            return Err(TokenFormatError::Dots { dots });
        };
        if let Some(extra) = malformed(id, ID_LEN) {
            return Err(TokenFormatError::Id {
                len: id.chars().count(),
                extra,
            });
        }
        if let Some(extra) = malformed(secret, SECRET_LEN) {
            return Err(TokenFormatError::Secret {
                len: secret.chars().count(),
                extra,
            });
        }
        Ok((id.to_owned(), TokenSecret(secret.to_owned())))
    }
}

/// The SHA-256 of `secret`, lowercase hex: the only form in which the hub keeps a secret.
/// (The same formula as the store's `hash_secret`.)
#[must_use]
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `None` when `part` is `len` characters of the alphabet; otherwise the extra error text.
fn malformed(part: &str, len: usize) -> Option<&'static str> {
    let good_chars = part.bytes().all(|b| ALPHABET.contains(&b));
    match (part.len() == len, good_chars) {
        (true, true) => None,
        (_, false) => Some(", some outside [a-z0-9]"),
        (false, true) => Some(""),
    }
}

/// `count` characters drawn uniformly from [`ALPHABET`]. Bytes of 252 and above are
/// dropped so that `byte % 36` is unbiased (252 = 7 × 36).
fn random_chars(rng: &SystemRandom, count: usize) -> Result<String, TokenError> {
    let mut out = String::with_capacity(count);
    let mut buf = [0u8; 32];
    while out.len() < count {
        rng.fill(&mut buf).map_err(|_| TokenError::Random)?;
        for byte in buf.iter().filter(|b| **b < 252) {
            if out.len() == count {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*byte % 36)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

    #[test]
    fn generated_tokens_have_kubeadm_shape_and_parse_back() {
        let token = JoinToken::generate(Duration::hours(2), NOW).unwrap();
        let text = token.expose();
        assert_eq!(text.len(), ID_LEN + 1 + SECRET_LEN);
        assert!(
            text.bytes()
                .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        let (id, secret) = JoinToken::parse(&format!("{text}\n")).unwrap();
        assert_eq!(id, token.id());
        assert_eq!(&secret, token.secret());
        assert_eq!(token.expires_at(), NOW + Duration::hours(2));
    }

    #[test]
    fn generated_tokens_differ() {
        let a = JoinToken::generate(DEFAULT_TTL, NOW).unwrap();
        let b = JoinToken::generate(DEFAULT_TTL, NOW).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_non_positive_ttl_is_refused() {
        let err = JoinToken::generate(Duration::ZERO, NOW).unwrap_err();
        assert_eq!(
            err,
            TokenError::NonPositiveTtl {
                ttl: Duration::ZERO
            }
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = JoinToken::generate(DEFAULT_TTL, NOW).unwrap();
        let secret = token.secret().expose().to_owned();
        let shown = format!("{token:?} {:?} {:#?}", token.secret(), token);
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains(token.id()), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_part_named_and_no_secret_echoed() {
        for (text, part) in [
            ("abcdef0123456789abcdef", "'.'"),
            ("abcdef.0123456789abcdef.x", "'.'"),
            ("abcde.0123456789abcdef", "id"),
            ("ABCDEF.0123456789abcdef", "id"),
            ("abcdef.0123456789abcde", "secret"),
            ("abcdef.0123456789ABCDEF", "secret"),
            ("abcdef.0123456789abcdé", "secret"),
            ("", "'.'"),
        ] {
            let err = JoinToken::parse(text).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(part), "{text:?}: {message}");
            if let Some((_, secret)) = text.split_once('.') {
                assert!(secret.is_empty() || !message.contains(secret), "{message}");
            }
        }
    }

    #[test]
    fn secret_hash_is_sha256_hex_of_the_secret() {
        // sha256("abc"), FIPS 180-2's first example.
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (_, secret) = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(secret.hash(), secret_hash("0123456789abcdef"));
    }
}
