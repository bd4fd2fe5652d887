//! Certificates embedded in kubeconfigs (`certificate-authority-data`,
//! `client-certificate-data` with its `client-key-data`). Kubeconfigs that point at files by
//! path are skipped: those files are scanned as part of the tree.

use base64::Engine;
use serde::Deserialize;

/// One embedded PEM payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// `certificate-authority-data` or `client-certificate-data`.
    pub field: &'static str,
    /// The `clusters[].name` or `users[].name` it belongs to.
    pub entry: String,
    /// Decoded PEM.
    pub pem: Vec<u8>,
    /// Decoded `client-key-data` of the same user, for client certificates.
    pub key_pem: Option<Vec<u8>>,
}

#[derive(Debug, Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    #[serde(default)]
    name: String,
    cluster: T,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    #[serde(default)]
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
}

/// Extracts the embedded certificates of a kubeconfig.
///
/// # Errors
/// A message naming the YAML problem or the field whose base64 does not decode.
pub fn embedded_certs(yaml: &[u8]) -> Result<Vec<Embedded>, String> {
    let config: Kubeconfig =
        serde_yaml::from_slice(yaml).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let decode = |field: &str, entry: &str, data: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("{field} of {entry:?} is not base64: {e}"))
    };
    let mut out = Vec::new();
    for cluster in &config.clusters {
        if let Some(data) = &cluster.cluster.ca_data {
            out.push(Embedded {
                field: "certificate-authority-data",
                entry: cluster.name.clone(),
                pem: decode("certificate-authority-data", &cluster.name, data)?,
                key_pem: None,
            });
        }
    }
    for user in &config.users {
        if let Some(data) = &user.user.cert_data {
            let key_pem = match &user.user.key_data {
                Some(key) => Some(decode("client-key-data", &user.name, key)?),
                None => None,
            };
            out.push(Embedded {
                field: "client-certificate-data",
                entry: user.name.clone(),
                pem: decode("client-certificate-data", &user.name, data)?,
                key_pem,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RKE2_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    #[test]
    fn rke2_admin_kubeconfig_yields_ca_and_client_cert() {
        let found = embedded_certs(RKE2_YAML.as_bytes()).expect("parses");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].field, "certificate-authority-data");
        assert_eq!(found[0].pem, b"CA");
        assert_eq!(found[1].field, "client-certificate-data");
        assert_eq!(found[1].entry, "default");
        assert_eq!(found[1].pem, b"CERT");
        assert_eq!(found[1].key_pem.as_deref(), Some(&b"KEY"[..]));
    }

    #[test]
    fn path_based_kubeconfig_yields_nothing() {
        let yaml = "clusters:\n- name: local\n  cluster:\n    certificate-authority: /x/ca.crt\nusers:\n- name: u\n  user:\n    client-certificate: /x/c.crt\n";
        assert!(embedded_certs(yaml.as_bytes()).expect("parses").is_empty());
    }

    #[test]
    fn bad_base64_names_the_field_and_entry() {
        let yaml = "users:\n- name: admin\n  user:\n    client-certificate-data: '!!'\n";
        let err = embedded_certs(yaml.as_bytes()).expect_err("bad base64");
        assert!(
            err.contains("client-certificate-data") && err.contains("admin"),
            "{err}"
        );
    }

    #[test]
    fn not_yaml_is_an_error() {
        assert!(embedded_certs(b"{{{{").is_err());
    }
}
