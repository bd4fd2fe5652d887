//! PEM encoding as Go's `encoding/pem` writes it (64-column base64, `\n` line ends).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Armour `der` as a PEM block of type `kind`.
#[must_use]
pub fn encode(kind: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(kind);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(kind);
    out.push_str("-----\n");
    out
}

/// A `CERTIFICATE` block.
#[must_use]
pub fn cert_pem(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

/// The DER of the first `CERTIFICATE` block of `text`.
#[must_use]
pub fn first_cert_der(text: &str) -> Option<Vec<u8>> {
    crate::check::gopem::decode_all(text.as_bytes())
        .into_iter()
        .find(|b| b.kind == "CERTIFICATE")
        .map(|b| b.der)
}
