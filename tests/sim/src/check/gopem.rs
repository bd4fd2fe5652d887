//! Go's `encoding/pem.Decode` and client-go's `ParseCertsPEM`, as RKE2's check reads files.
//!
//! Written independently of `rke2ops-common` on purpose: end-to-end tests compare the agent's
//! reading of a file with this one. Behaviour kept from Go: text around blocks is ignored; a
//! block whose END line does not match, whose base64 does not decode, or that is cut short is
//! skipped and the search goes on after its BEGIN line; blocks with headers or of another type
//! are ignored by `parse_certs`; the first `CERTIFICATE` whose DER does not parse fails the whole
//! file; a file without certificates is an error.

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use x509_parser::certificate::X509Certificate;

const PEM_START: &[u8] = b"\n-----BEGIN ";
const PEM_END: &[u8] = b"\n-----END ";
const PEM_END_OF_LINE: &[u8] = b"-----";

/// Go's `base64.StdEncoding`: padded, tolerant of non-zero trailing bits.
const GO_STD_ENCODING: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// One decoded PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The word(s) after `BEGIN`, e.g. `CERTIFICATE`.
    pub kind: String,
    /// Whether the block carried `Key: value` headers (Go's `len(block.Headers) != 0`).
    pub has_headers: bool,
    /// The decoded body.
    pub der: Vec<u8>,
}

/// Why a file yields no certificates.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// No usable `CERTIFICATE` block (what client-go reports for keys, junk and empty files).
    #[error("data does not contain any valid RSA or ECDSA certificates")]
    NoCertificates,
    /// A `CERTIFICATE` block whose DER is not a certificate.
    #[error("x509: malformed certificate: {0}")]
    BadCertificate(String),
}

fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let trimmed_len = line
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t' && b != b'\r')
        .map_or(0, |p| p + 1);
    (&line[..trimmed_len], rest)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Go's `pem.Decode`: the next block and the rest of the input, or `None` when no further
/// block can be decoded.
#[must_use]
pub fn decode(data: &[u8]) -> Option<(Block, &[u8])> {
    let mut rest = data;
    loop {
        if rest.starts_with(&PEM_START[1..]) {
            rest = &rest[PEM_START.len() - 1..];
        } else if let Some(i) = find(rest, PEM_START) {
            rest = &rest[i + PEM_START.len()..];
        } else {
            return None;
        }
        let (type_line, after_type) = get_line(rest);
        rest = after_type;
        let Some(kind) = type_line.strip_suffix(PEM_END_OF_LINE) else {
            continue;
        };
        // Headers: `Key: value` lines right after the BEGIN line.
        let mut has_headers = false;
        let mut body = rest;
        loop {
            if body.is_empty() {
                return None;
            }
            let (line, next) = get_line(body);
            // Go treats any line with a colon as a `Key: value` header.
            if !line.contains(&b':') {
                break;
            }
            has_headers = true;
            body = next;
        }
        let (end_index, end_trailer_index) = if !has_headers && body.starts_with(&PEM_END[1..]) {
            (0, PEM_END.len() - 1)
        } else {
            match find(body, PEM_END) {
                Some(i) => (i, i + PEM_END.len()),
                None => continue,
            }
        };
        let end_trailer = &body[end_trailer_index..];
        let trailer_len = kind.len() + PEM_END_OF_LINE.len();
        if end_trailer.len() < trailer_len {
            continue;
        }
        let (trailer, rest_of_end_line) = end_trailer.split_at(trailer_len);
        if !trailer.starts_with(kind) || !trailer.ends_with(PEM_END_OF_LINE) {
            continue;
        }
        if !get_line(rest_of_end_line).0.is_empty() {
            continue;
        }
        let b64: Vec<u8> = body[..end_index]
            .iter()
            .copied()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .collect();
        let Ok(der) = GO_STD_ENCODING.decode(&b64) else {
            continue;
        };
        let (_, after) = get_line(&body[end_index + PEM_END.len() - 1..]);
        return Some((
            Block {
                kind: String::from_utf8_lossy(kind).into_owned(),
                has_headers,
                der,
            },
            after,
        ));
    }
}

/// Every block `decode` finds, in order.
#[must_use]
pub fn decode_all(mut data: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    while let Some((block, rest)) = decode(data) {
        blocks.push(block);
        data = rest;
    }
    blocks
}

/// client-go's `ParseCertsPEM`: the DER of every certificate, with Go's error rules. Each DER
/// is checked to parse as a certificate with nothing trailing, like `x509.ParseCertificate`.
pub fn parse_certs(data: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let mut certs = Vec::new();
    for block in decode_all(data) {
        if block.kind != "CERTIFICATE" || block.has_headers {
            continue;
        }
        match x509_parser::parse_x509_certificate(&block.der) {
            Ok(([], _)) => {}
            Ok(_) => return Err(ParseError::BadCertificate("trailing data".into())),
            Err(e) => return Err(ParseError::BadCertificate(e.to_string())),
        }
        certs.push(block.der);
    }
    if certs.is_empty() {
        return Err(ParseError::NoCertificates);
    }
    Ok(certs)
}

/// Parse one DER certificate that `parse_certs` already accepted.
pub fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, ParseError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| ParseError::BadCertificate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armour(kind: &str, body: &[u8]) -> String {
        let b64 = GO_STD_ENCODING.encode(body);
        let mut s = format!("-----BEGIN {kind}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
            s.push('\n');
        }
        s.push_str(&format!("-----END {kind}-----\n"));
        s
    }

    #[test]
    fn decodes_consecutive_blocks_and_ignores_text_around_them() {
        let text = format!(
            "leading junk\n{}between\n{}trailing",
            armour("CERTIFICATE", b"one"),
            armour("EC PRIVATE KEY", b"two")
        );
        let blocks = decode_all(text.as_bytes());
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].kind, "CERTIFICATE");
        assert_eq!(blocks[0].der, b"one");
        assert_eq!(blocks[1].kind, "EC PRIVATE KEY");
        assert_eq!(blocks[1].der, b"two");
    }

    #[test]
    fn truncated_block_is_dropped_but_earlier_blocks_remain() {
        let full = format!(
            "{}{}",
            armour("CERTIFICATE", b"one"),
            armour("CERTIFICATE", b"two")
        );
        let cut = &full[..full.len() - 10];
        let blocks = decode_all(cut.as_bytes());
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].der, b"one");
    }

    #[test]
    fn bad_base64_and_mismatched_end_are_skipped() {
        let text = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n\
                    -----BEGIN A-----\nAAAA\n-----END B-----\n";
        assert!(decode_all(text.as_bytes()).is_empty());
    }

    #[test]
    fn headers_are_detected() {
        let text = "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n";
        let blocks = decode_all(text.as_bytes());
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].has_headers);
    }

    #[test]
    fn files_without_certificates_or_with_junk_der_fail() {
        assert!(matches!(parse_certs(b""), Err(ParseError::NoCertificates)));
        assert!(matches!(
            parse_certs(armour("EC PRIVATE KEY", b"k").as_bytes()),
            Err(ParseError::NoCertificates)
        ));
        assert!(matches!(
            parse_certs(armour("CERTIFICATE", b"junk").as_bytes()),
            Err(ParseError::BadCertificate(_))
        ));
    }
}
