//! Real etcd clusters for tests and benches of the hub's etcd store (`store = "etcd"`): a
//! member per loopback address, killed on drop. Needs the `etcd` and `etcdctl` binaries (the
//! test command installs the `etcd` packages).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd cluster of one or more members on `127.0.<net>.1..n`.
#[derive(Debug)]
pub struct Etcd {
    dir: tempfile::TempDir,
    net: u8,
    members: Vec<Option<Child>>,
    /// Client TLS with client-certificate auth ([`Etcd::start_tls`]).
    tls: Option<TlsFiles>,
}

/// The files of an etcd with mutual TLS on its client port: the CA that signed the server
/// and client certificates, and a client certificate with its key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: std::path::PathBuf,
    /// A client certificate etcd accepts.
    pub cert: std::path::PathBuf,
    /// Its key.
    pub key: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
}

impl Etcd {
    /// Starts `n` members on `127.0.<net>.1..n` (client port 2379, peer port 2380) and waits
    /// until every one is healthy.
    ///
    /// # Panics
    /// When etcd is not installed or does not become healthy within 30 s.
    #[must_use]
    pub fn start(net: u8, n: usize) -> Etcd {
        Self::start_with(net, n, false)
    }

    /// [`Etcd::start`] with TLS on the client port and client certificates required
    /// (`--client-cert-auth`), from a CA made here ([`Etcd::tls`]).
    ///
    /// # Panics
    /// As [`Etcd::start`], or when the certificates cannot be made.
    #[must_use]
    pub fn start_tls(net: u8, n: usize) -> Etcd {
        Self::start_with(net, n, true)
    }

    fn start_with(net: u8, n: usize, tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = tls.then(|| make_tls(dir.path(), net, n));
        let mut etcd = Etcd {
            dir,
            net,
            members: (0..n).map(|_| None).collect(),
            tls,
        };
        for i in 0..n {
            etcd.start_member(i);
        }
        etcd.wait_healthy(n);
        etcd
    }

    fn ip(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, i + 1)
    }

    /// The TLS files, for an etcd started with [`Etcd::start_tls`].
    #[must_use]
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Every member's client URL, comma-separated (for `--etcd-endpoint`).
    #[must_use]
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| format!("{}://{}:2379", self.scheme(), self.ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts member `i` with its data dir (it rejoins with its data after a kill).
    ///
    /// # Panics
    /// When `etcd` cannot be run.
    pub fn start_member(&mut self, i: usize) {
        let cluster = (0..self.members.len())
            .map(|j| format!("m{j}=http://{}:2380", self.ip(j)))
            .collect::<Vec<_>>()
            .join(",");
        let data = self.dir.path().join(format!("m{i}"));
        let state = if data.exists() { "existing" } else { "new" };
        let ip = self.ip(i);
        let scheme = self.scheme();
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("{scheme}://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("{scheme}://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
            ])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "rke2ops-hub"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (the test command installs the etcd packages)");
        self.members[i] = Some(child);
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `n` members answer healthy.
    ///
    /// # Panics
    /// After 30 s.
    pub fn wait_healthy(&self, n: usize) {
        let started = Instant::now();
        loop {
            let mut etcdctl = Command::new("etcdctl");
            if let Some(tls) = &self.tls {
                etcdctl
                    .arg("--cacert")
                    .arg(&tls.ca)
                    .arg("--cert")
                    .arg(&tls.cert)
                    .arg("--key")
                    .arg(&tls.key);
            }
            let out = etcdctl
                .args(["--endpoints", &self.endpoints(), "endpoint", "health"])
                .args(["--command-timeout", "2s"])
                .output()
                .expect("etcdctl (the test command installs the etcd packages)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if text.matches("is healthy").count() >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd not healthy: {text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}

/// A CA, a server certificate for every member's address and a client certificate, written
/// under `dir`.
fn make_tls(dir: &std::path::Path, net: u8, n: usize) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a TLS file");
        path
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "test etcd CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let ca_path = write("etcd-ca.crt", ca_cert.pem());
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let sans = (1..=n)
        .map(|i| {
            SanType::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127,
                0,
                net,
                u8::try_from(i).expect("few members"),
            )))
        })
        .collect();
    let (server_cert, server_key) = leaf("etcd", sans, ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) =
        leaf("rke2-hub", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
    TlsFiles {
        ca: ca_path,
        cert: write("hub-client.crt", client_cert),
        key: write("hub-client.key", client_key),
        server_cert: write("etcd-server.crt", server_cert),
        server_key: write("etcd-server.key", server_key),
    }
}
