//! Which leaf certificates RKE2 keeps, with subject, issuer, usages and SANs
//! (`reference/rke2.md` and k3s `deps.go`; see `tests/SIMULATOR.md` §2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cas::CaKind;
use super::{Role, TreeSpec};

/// Extended key usages RKE2 sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    /// id-kp-serverAuth.
    ServerAuth,
    /// id-kp-clientAuth.
    ClientAuth,
}

/// One leaf certificate + key pair in the data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafDef {
    /// Certificate path relative to the data dir.
    pub cert_rel: String,
    /// Key path relative to the data dir.
    pub key_rel: String,
    /// Issuing CA.
    pub ca: CaKind,
    /// Subject CN.
    pub cn: String,
    /// Subject O, if any.
    pub org: Option<String>,
    /// Extended key usages, in RKE2's order.
    pub ekus: Vec<Eku>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
}

/// RKE2's default first service IP (service CIDR 10.43.0.0/16).
const SERVICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 43, 0, 1));
const LOOPBACK4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOOPBACK6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn leaf(cert_rel: &str, ca: CaKind, cn: &str, org: Option<&str>, ekus: &[Eku]) -> LeafDef {
    LeafDef {
        cert_rel: cert_rel.to_owned(),
        key_rel: cert_rel
            .strip_suffix(".crt")
            .map_or_else(|| format!("{cert_rel}.key"), |base| format!("{base}.key")),
        ca,
        cn: cn.to_owned(),
        org: org.map(str::to_owned),
        ekus: ekus.to_vec(),
        dns: Vec::new(),
        ips: Vec::new(),
    }
}

fn with_sans(mut def: LeafDef, dns: Vec<String>, ips: Vec<IpAddr>) -> LeafDef {
    def.dns = dns;
    def.ips = ips;
    def
}

/// `--tls-san` values split into DNS names and IPs, like k3s `addSANs`.
fn split_sans(spec: &TreeSpec) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for san in &spec.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(san.clone()),
        }
    }
    (dns, ips)
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// The leaves of a node, server leaves first.
#[must_use]
pub fn leaves(spec: &TreeSpec) -> Vec<LeafDef> {
    use CaKind::{Client, EtcdPeer, EtcdServer, RequestHeader, Server};
    use Eku::{ClientAuth, ServerAuth};
    let node = spec.node_name.as_str();
    let (extra_dns, extra_ips) = split_sans(spec);
    let mut out = Vec::new();

    if spec.role == Role::Server {
        let masters = Some("system:masters");
        out.push(leaf(
            "server/tls/client-admin.crt",
            Client,
            "system:admin",
            masters,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-supervisor.crt",
            Client,
            "system:rke2-supervisor",
            masters,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-controller.crt",
            Client,
            "system:kube-controller-manager",
            None,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-scheduler.crt",
            Client,
            "system:kube-scheduler",
            None,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-kube-apiserver.crt",
            Client,
            "system:apiserver",
            masters,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-kube-proxy.crt",
            Client,
            "system:kube-proxy",
            None,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-rke2-controller.crt",
            Client,
            "system:rke2-controller",
            None,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-rke2-cloud-controller.crt",
            Client,
            "rke2-cloud-controller-manager",
            None,
            &[ClientAuth],
        ));
        out.push(leaf(
            "server/tls/client-auth-proxy.crt",
            RequestHeader,
            "system:auth-proxy",
            None,
            &[ClientAuth],
        ));

        // apiserver: the kubernetes service names, then the server SANs RKE2 adds.
        let mut api_dns: Vec<String> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            node,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut api_ips = vec![LOOPBACK4, LOOPBACK6, spec.node_ip, SERVICE_IP];
        extra_dns
            .iter()
            .for_each(|d| push_unique(&mut api_dns, d.clone()));
        extra_ips
            .iter()
            .for_each(|ip| push_unique(&mut api_ips, *ip));
        out.push(with_sans(
            leaf(
                "server/tls/serving-kube-apiserver.crt",
                Server,
                "kube-apiserver",
                None,
                &[ServerAuth],
            ),
            api_dns,
            api_ips,
        ));

        let mut etcd_dns: Vec<String> = ["kine.sock", "localhost", node]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut etcd_ips = vec![LOOPBACK4, LOOPBACK6, spec.node_ip];
        extra_dns
            .iter()
            .for_each(|d| push_unique(&mut etcd_dns, d.clone()));
        extra_ips
            .iter()
            .for_each(|ip| push_unique(&mut etcd_ips, *ip));
        out.push(with_sans(
            leaf(
                "server/tls/etcd/server-client.crt",
                EtcdServer,
                "etcd-server",
                None,
                &[ServerAuth, ClientAuth],
            ),
            etcd_dns.clone(),
            etcd_ips.clone(),
        ));
        out.push(leaf(
            "server/tls/etcd/client.crt",
            EtcdServer,
            "etcd-client",
            None,
            &[ClientAuth],
        ));
        out.push(with_sans(
            leaf(
                "server/tls/etcd/peer-server-client.crt",
                EtcdPeer,
                "etcd-peer",
                None,
                &[ServerAuth, ClientAuth],
            ),
            etcd_dns,
            etcd_ips,
        ));

        let loopback_dns = vec!["localhost".to_owned()];
        let loopback_ips = vec![LOOPBACK4, LOOPBACK6];
        out.push(with_sans(
            leaf(
                "server/tls/kube-controller-manager/kube-controller-manager.crt",
                Server,
                "kube-controller-manager",
                None,
                &[ServerAuth],
            ),
            loopback_dns.clone(),
            loopback_ips.clone(),
        ));
        out.push(with_sans(
            leaf(
                "server/tls/kube-scheduler/kube-scheduler.crt",
                Server,
                "kube-scheduler",
                None,
                &[ServerAuth],
            ),
            loopback_dns,
            loopback_ips,
        ));
    }

    out.push(leaf(
        "agent/client-kubelet.crt",
        Client,
        &format!("system:node:{node}"),
        Some("system:nodes"),
        &[ClientAuth],
    ));
    out.push(with_sans(
        leaf(
            "agent/serving-kubelet.crt",
            Server,
            node,
            None,
            &[ServerAuth],
        ),
        vec![node.to_owned(), "localhost".to_owned()],
        vec![LOOPBACK4, spec.node_ip],
    ));
    out.push(leaf(
        "agent/client-kube-proxy.crt",
        Client,
        "system:kube-proxy",
        None,
        &[ClientAuth],
    ));
    out.push(leaf(
        "agent/client-rke2-controller.crt",
        Client,
        "system:rke2-controller",
        None,
        &[ClientAuth],
    ));
    out
}

/// The supervisor's dynamiclistener certificate (port 9345 and 6443 front), stored in
/// `server/tls/dynamic-cert.json`: CN=rke2, O=rke2, signed by the server CA.
#[must_use]
pub fn supervisor_cert(spec: &TreeSpec) -> LeafDef {
    let (extra_dns, extra_ips) = split_sans(spec);
    let mut dns: Vec<String> = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        spec.node_name.as_str(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut ips = vec![LOOPBACK4, LOOPBACK6, spec.node_ip, SERVICE_IP];
    extra_dns.into_iter().for_each(|d| push_unique(&mut dns, d));
    extra_ips
        .into_iter()
        .for_each(|ip| push_unique(&mut ips, ip));
    let mut def = leaf(
        super::DYNAMIC_CERT_REL,
        CaKind::Server,
        "rke2",
        Some("rke2"),
        &[Eku::ServerAuth],
    );
    def.key_rel = String::new();
    with_sans(def, dns, ips)
}

/// Keys RKE2 keeps in `server/tls` without a certificate (signing keys for agent certs).
pub const SERVER_ONLY_KEYS: &[&str] = &[
    "server/tls/client-kubelet.key",
    "server/tls/serving-kubelet.key",
];
