//! The hub's small HTTP reads (RKE2's channels document, Prometheus's alerts): one GET that
//! asks for JSON and returns the body of a 200 answer, the reason otherwise. Callers wrap the
//! reason in their own error naming the URL.

/// `GET url` (Accept: application/json) with `client`: the body when the answer is 200.
///
/// # Errors
/// The transport error or `HTTP <status>`, as text.
pub async fn get_json_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}
