//! The hub's small HTTP reads (RKE2's channels document, Prometheus's alerts): one GET that
//! asks for JSON and returns the body of a 200 answer, the reason otherwise. Callers wrap the
//! reason in their own error naming the URL as [`display_url`] shows it.
//!
//! Both peers are outside the hub's trust: the body is capped at [`MAX_BODY`], and reasons
//! never carry the URL (reqwest's errors would repeat it, credentials and all).
//!
//! - [`channel`]: RKE2's channels document, for `upgrade --channel`;
//! - [`alerts`]: Prometheus's firing alerts, for the alert gate.
//!
//! Only the network reads live here: what an answer means is decided by the pure readers in
//! [`crate::plan::channel`] and [`crate::plan::alerts`].

pub mod alerts;
pub mod channel;

/// The largest body read: RKE2's channels document is a few kB, Prometheus's alert list
/// for a large cluster well under a MB.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// `GET url` (Accept: application/json) with `client`: the body when the answer is 200.
///
/// # Errors
/// The transport error (without the URL), `HTTP <status>`, or a body over [`MAX_BODY`], as
/// text.
pub async fn get_json_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(format!("the answer is larger than {MAX_BODY} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())
}

/// `url` without user, password, query or fragment, for messages and `plan show` (a
/// Prometheus behind basic auth may be configured as `https://user:pass@...`, a mirror with
/// `?token=...`).
#[must_use]
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            display_url("https://alice:s3cret@prom.example:9090/?token=abc#x"),
            "https://prom.example:9090"
        );
        assert_eq!(display_url("http://h/a/b"), "http://h/a/b");
        assert_eq!(display_url("not a url s3cret"), "<not a URL>");
    }

    #[tokio::test]
    async fn oversized_answers_and_transport_errors_name_no_url() {
        // A peer that streams more than MAX_BODY (no Content-Length): refused, bounded.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut s, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..12 {
                    let head = format!("{:x}\r\n", chunk.len());
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&chunk).await.is_err()
                        || s.write_all(b"\r\n").await.is_err()
                    {
                        return;
                    }
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(
            peer,
            tracing::info_span!("oversized_peer", %addr),
        ));
        let client = reqwest::Client::new();
        let err = get_json_text(&client, &format!("http://u:s3cret@{addr}/x"))
            .await
            .expect_err("too large");
        assert!(err.contains("larger than"), "{err}");
        // Nothing listens there: the reason names no URL and so no password.
        let err = get_json_text(&client, "http://u:s3cret@127.0.0.1:9/x?token=t0k")
            .await
            .expect_err("refused");
        assert!(!err.contains("s3cret") && !err.contains("t0k"), "{err}");
    }
}
