//! The operator commands that are not plans (`token create`, `nodes`, `certs`, `admin-cert`):
//! the connection to a running hub ([`connect`]: its admin socket, or `--hub` over mutual TLS
//! with an admin certificate), the requests, and their output. `admin-cert` works on the
//! state dir directly (it needs the CA's key, which never crosses the wire).
//!
//! It owns no argument definitions ([`super`]) and no table layout ([`super::render`]).

use std::path::Path;

use anyhow::Context as _;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_client::AdminServiceClient;
use time::OffsetDateTime;
use tonic::transport::Channel;

use crate::cli::{
    AdminCertRevokeArgs, CertsArgs, ListArgs, NodeRemoveArgs, NodesArgs, NodesCommand, Output,
    TokenCreateArgs, render,
};
use crate::grpc::convert;
use crate::store::model::{CertRow, FileErrorRow, NodeRecord};

pub(crate) async fn connect(
    args: &crate::cli::ClientArgs,
) -> anyhow::Result<AdminServiceClient<Channel>> {
    match (&args.hub, &args.admin_dir) {
        (Some(hub), Some(dir)) => connect_tls(hub, dir).await,
        (Some(hub), None) => {
            anyhow::bail!("--hub {hub} needs --admin-dir with an admin certificate")
        }
        _ => connect_socket(&args.socket).await,
    }
}

/// Remote admin access: mutual TLS with an admin certificate, the hub verified against its CA.
async fn connect_tls(hub: &str, dir: &Path) -> anyhow::Result<AdminServiceClient<Channel>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let host = hub
        .rsplit_once(':')
        .map_or(hub, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(Identity::from_pem(read("admin.crt")?, read("admin.key")?))
        .domain_name(host);
    let channel = Endpoint::from_shared(format!("https://{hub}"))
        .with_context(|| format!("bad hub address {hub:?}"))?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the hub at {hub}"))?;
    Ok(AdminServiceClient::new(channel))
}

async fn connect_socket(socket: &Path) -> anyhow::Result<AdminServiceClient<Channel>> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector dials the Unix socket.
    let channel = tonic::transport::Endpoint::from_static("http://hub.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot reach the hub at {} (is `rke2-hub serve` running? are you root?)",
                socket.display()
            )
        })?;
    Ok(AdminServiceClient::new(channel))
}

pub(crate) fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the hub refused: {} ({:?})",
        status.message(),
        status.code()
    )
}

/// `rke2-hub token create`.
///
/// # Errors
/// When the hub is unreachable or refuses.
pub async fn token_create(args: &TokenCreateArgs) -> anyhow::Result<()> {
    let role = args.role.map(crate::cli::RoleArg::as_str);
    if args.dry_run {
        match args.client.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({
                    "dry_run": true,
                    "single_use": true,
                    "ttl_seconds": args.ttl.as_secs(),
                    "node": args.node,
                    "replace": args.replace,
                    "role": role,
                    "cluster": args.cluster,
                })
            ),
            Output::Table => println!(
                "dry run: would create a single-use join token valid for {}{}",
                humantime::format_duration(args.ttl),
                binding_words(
                    args.node.as_deref(),
                    args.replace,
                    role,
                    args.cluster.as_deref()
                )
            ),
        }
        return Ok(());
    }
    let mut client = connect(&args.client).await?;
    let response = client
        .create_bound_token(pb::CreateBoundTokenRequest {
            ttl_seconds: args.ttl.as_secs(),
            node: args.node.clone().unwrap_or_default(),
            replace: args.replace,
            role: role.map_or(pb::NodeRole::Unspecified.into(), convert::role_value),
            cluster: args.cluster.clone().unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let expires = response
        .expires_at
        .as_ref()
        .and_then(|t| convert::time_of(t, "expires_at").ok())
        .map(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let node = (!response.node.is_empty()).then_some(response.node.as_str());
    let role = match convert::role_word(response.role) {
        "unknown" => None,
        word => Some(word),
    };
    match args.client.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "token": response.token,
                "ca_pin": response.ca_pin,
                "expires_at": expires,
                "hub_address": response.hub_address,
                "node": node,
                "replace": response.replace,
                "role": role,
                "cluster": (!response.cluster.is_empty()).then_some(&response.cluster),
            })
        ),
        Output::Table => {
            println!("token:        {}", response.token);
            println!("hub CA pin:   {}", response.ca_pin);
            println!("expires:      {expires}");
            let cluster = (!response.cluster.is_empty()).then_some(response.cluster.as_str());
            let binding = binding_words(node, response.replace, role, cluster);
            if !binding.is_empty() {
                println!("allows:      {binding}");
            }
            println!("\nOn each node, in /etc/rke2-ops/node-agent.toml:");
            println!(
                "  hub_address = \"{}\"\n  hub_token = \"{}\"\n  hub_ca_pin = \"{}\"",
                response.hub_address, response.token, response.ca_pin
            );
            if let Some(node) = node {
                println!("  node_name = \"{node}\"");
            }
            if let Some(cluster) = cluster {
                println!("  cluster = \"{cluster}\"");
            }
        }
    }
    Ok(())
}

/// What a token allows, in words (empty for an unbound token).
fn binding_words(
    node: Option<&str>,
    replace: bool,
    role: Option<&str>,
    cluster: Option<&str>,
) -> String {
    let mut words = String::new();
    if let Some(node) = node {
        words.push_str(&format!(" for node {node} only"));
    }
    if replace {
        words.push_str(", replacing its current certificate");
    }
    if let Some(role) = role {
        words.push_str(&format!(", as {role}"));
    }
    if let Some(cluster) = cluster {
        words.push_str(&format!(", into cluster {cluster}"));
    }
    words
}

fn node_record(n: &pb::NodeInfo) -> NodeRecord {
    let time =
        |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(|t| convert::time_of(t, "").ok());
    let last_seen = time(&n.last_seen).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    NodeRecord {
        name: n.name.clone(),
        role: convert::role_word(n.role).to_owned(),
        rke2_version: n.rke2_version.clone(),
        agent_version: n.agent_version.clone(),
        service_state: n.service_state.clone(),
        worst_status: convert::status_word(n.worst_status).map(str::to_owned),
        renewal_deadline: time(&n.renewal_deadline),
        online: n.online,
        online_changed_at: last_seen,
        first_seen: last_seen,
        last_seen,
        certificates_at: None,
        cluster: n.cluster.clone(),
    }
}

/// `rke2-hub nodes` and its subcommands.
///
/// # Errors
/// When the hub is unreachable or refuses.
pub async fn nodes(args: &NodesArgs) -> anyhow::Result<()> {
    match &args.command {
        None => list_nodes(&args.list).await,
        Some(NodesCommand::Remove(remove)) => node_remove(remove).await,
    }
}

/// `rke2-hub nodes remove NAME`.
///
/// # Errors
/// When the hub is unreachable or refuses (an unknown node, a node in an active plan).
pub async fn node_remove(args: &NodeRemoveArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .remove_node(pb::RemoveNodeRequest {
            name: args.name.clone(),
            dry_run: args.dry_run,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let serial = (!response.revoked_serial.is_empty()).then_some(response.revoked_serial.as_str());
    let role = match convert::role_word(response.role) {
        "unknown" => None,
        word => Some(word),
    };
    match args.client.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dry_run": response.dry_run,
                "name": response.name,
                "role": role,
                "revoked_serial": serial,
                "in_inventory": response.in_inventory,
                "certificates": response.certificates,
                "was_connected": response.was_connected,
            }))?
        ),
        Output::Table => {
            let verb = if response.dry_run {
                "dry run: would remove"
            } else {
                "removed"
            };
            println!(
                "{verb} node {} ({} certificates forgotten); certificate serial {} {}{}",
                response.name,
                response.certificates,
                serial.unwrap_or("(not recorded)"),
                if response.dry_run {
                    "would be revoked"
                } else {
                    "revoked"
                },
                if response.was_connected && !response.dry_run {
                    "; its stream was ended"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

async fn list_nodes(args: &ListArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .list_nodes(pb::ListNodesRequest {
            cluster: args.cluster.clone().unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let nodes: Vec<render::NodeLine> = response
        .nodes
        .iter()
        .map(|n| render::NodeLine {
            record: node_record(n),
            file_errors: n.error_count,
            worst_finding: n.worst_finding.clone(),
            install_method: n.install_method.clone(),
            install_detail: n.install_detail.clone(),
        })
        .collect();
    match args.client.output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = nodes
                .iter()
                .map(|n| {
                    let mut doc = serde_json::to_value(&n.record).unwrap_or_default();
                    doc["file_errors"] = n.file_errors.into();
                    doc["worst_finding"] = n.worst_finding.clone().into();
                    doc["install_method"] = n.install_method.clone().into();
                    doc["install_detail"] = n.install_detail.clone().into();
                    doc
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "nodes": docs }))?
            );
        }
        Output::Table => print!("{}", render::nodes(&nodes, OffsetDateTime::now_utc())),
    }
    Ok(())
}

/// `rke2-hub clusters` (`--cluster` shows one).
///
/// # Errors
/// When the hub is unreachable or refuses.
pub async fn clusters(args: &ListArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let mut clusters = client
        .list_clusters(pb::ListClustersRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .clusters;
    if let Some(only) = &args.cluster {
        clusters.retain(|c| &c.name == only);
        anyhow::ensure!(!clusters.is_empty(), "no node is in cluster {only:?}");
    }
    match args.client.output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = clusters
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "servers": c.servers,
                        "agents": c.agents,
                        "online": c.online,
                        "versions": c.versions,
                        "kubernetes_access": c.kubernetes_access,
                        "active_plan": (!c.active_plan.is_empty()).then(|| serde_json::json!({
                            "id": c.active_plan,
                            "state": c.active_plan_state,
                        })),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "clusters": docs }))?
            );
        }
        Output::Table => {
            let mut lines = vec![
                [
                    "CLUSTER",
                    "SERVERS",
                    "AGENTS",
                    "ONLINE",
                    "VERSIONS",
                    "KUBERNETES",
                    "PLAN",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for c in &clusters {
                lines.push(vec![
                    c.name.clone(),
                    c.servers.to_string(),
                    c.agents.to_string(),
                    format!("{}/{}", c.online, c.servers + c.agents),
                    if c.versions.is_empty() {
                        "-".to_owned()
                    } else {
                        c.versions.join(",")
                    },
                    if c.kubernetes_access {
                        "yes".to_owned()
                    } else {
                        "no (no cordon/drain)".to_owned()
                    },
                    if c.active_plan.is_empty() {
                        "-".to_owned()
                    } else {
                        format!("{} ({})", c.active_plan, c.active_plan_state)
                    },
                ]);
            }
            print!("{}", rke2ops_common::report::tabwriter::layout(&lines, 3));
        }
    }
    Ok(())
}

/// `rke2-hub certs`.
///
/// # Errors
/// When the hub is unreachable or refuses (e.g. an unknown node).
pub async fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    // Page by page: a large fleet's certificates do not fit one message.
    let mut response = pb::ListCertificatesResponse::default();
    loop {
        let page = client
            .list_certificates(pb::ListCertificatesRequest {
                node: args.node.clone().unwrap_or_default(),
                expiring_within_seconds: args.expiring_within.map_or(0, |d| d.as_secs()),
                limit: 0,
                page_token: std::mem::take(&mut response.next_page_token),
                cluster: args.cluster.clone().unwrap_or_default(),
            })
            .await
            .map_err(refused)?
            .into_inner();
        response.certificates.extend(page.certificates);
        response.errors.extend(page.errors);
        response.next_page_token = page.next_page_token;
        if response.next_page_token.is_empty() {
            break;
        }
    }
    let rows: Vec<(String, CertRow)> = response
        .certificates
        .iter()
        .filter_map(|c| {
            Some((
                c.node.clone(),
                convert::cert_row(c.certificate.as_ref()?, "certificate").ok()?,
            ))
        })
        .collect();
    let errors: Vec<(String, FileErrorRow)> = response
        .errors
        .iter()
        .filter_map(|e| Some((e.node.clone(), convert::error_row(e.error.as_ref()?))))
        .collect();
    // The worst finding of each node shown (from the fleet doctor's last run).
    let findings: Vec<(String, String)> = client
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .map_err(refused)?
        .into_inner()
        .nodes
        .into_iter()
        .filter(|n| !n.worst_finding.is_empty())
        .filter(|n| args.node.as_ref().is_none_or(|only| *only == n.name))
        .map(|n| (n.name, n.worst_finding))
        .collect();
    match args.client.output {
        Output::Json => {
            let certs: Vec<serde_json::Value> = rows
                .iter()
                .map(|(node, row)| {
                    let mut doc = serde_json::to_value(row).unwrap_or_default();
                    doc["node"] = node.clone().into();
                    doc
                })
                .collect();
            let errs: Vec<serde_json::Value> = errors
                .iter()
                .map(|(node, e)| serde_json::json!({"node": node, "path": e.path, "reason": e.reason}))
                .collect();
            let worst: serde_json::Map<String, serde_json::Value> = findings
                .iter()
                .map(|(node, f)| (node.clone(), f.clone().into()))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "certificates": certs,
                    "errors": errs,
                    "worst_findings": worst
                }))?
            );
        }
        Output::Table => print!(
            "{}",
            render::certs(&rows, &errors, &findings, OffsetDateTime::now_utc())
        ),
    }
    Ok(())
}

/// `rke2-hub admin-cert create`: issues an admin client certificate with the hub CA and
/// records its serial (the only certificate the hub accepts for the name) and the audit
/// entry. Needs the hub's CA in the state dir and never creates one: a new CA would be one no
/// agent trusts.
///
/// # Errors
/// When there is no CA, the name is invalid or already has a certificate (without
/// `--replace`), or the files cannot be written.
pub fn admin_cert_create(args: &crate::cli::AdminCertArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    crate::pki::validate_admin_name(&args.name)?;
    // Before anything is opened or written: no CA, no certificate (and no new files).
    let ca = crate::pki::HubCa::load_existing(&args.state_dir, now)?;
    let store = open_existing_store(&args.state_dir)?;
    let supersedes = store.admin_certificate_allowed(&args.name, args.replace)?;
    if args.dry_run {
        match args.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"dry_run": true, "cn": format!("admin:{}", args.name), "out": args.out, "supersedes_serial": supersedes})
            ),
            Output::Table => println!(
                "dry run: would issue admin certificate CN=admin:{} (1 year) into {}{}",
                args.name,
                args.out.display(),
                supersedes
                    .as_deref()
                    .map(|s| format!(", superseding serial {s}"))
                    .unwrap_or_default()
            ),
        }
        return Ok(());
    }
    let issued = ca.issue_admin_cert(&args.name, now)?;
    rke2ops_common::identity::create_private_dir(&args.out)?;
    rke2ops_common::identity::write_secret_file(
        &args.out.join("admin.key"),
        issued.key_pem.as_bytes(),
    )?;
    rke2ops_common::identity::write_secret_file(
        &args.out.join("admin.crt"),
        issued.cert_pem.as_bytes(),
    )?;
    rke2ops_common::identity::write_secret_file(
        &args.out.join("ca.crt"),
        ca.cert_pem().as_bytes(),
    )?;
    let actor = format!("uid:{}", nix::unistd::getuid().as_raw());
    let superseded = store.record_admin_certificate(
        &args.name,
        &issued.serial,
        issued.not_after,
        args.replace,
        &actor,
        now,
    )?;
    let not_after = rke2ops_common::report::json::rfc3339(issued.not_after);
    match args.output {
        // The key stays in its 0600 file; only where it is gets printed.
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "cn": format!("admin:{}", args.name),
                "serial": issued.serial.to_string(),
                "not_after": not_after,
                "cert": args.out.join("admin.crt"),
                "key": args.out.join("admin.key"),
                "ca": args.out.join("ca.crt"),
                "superseded_serial": superseded,
            })
        ),
        Output::Table => println!(
            "issued admin:{} (serial {}, until {not_after}) into {}{}",
            args.name,
            issued.serial,
            args.out.display(),
            superseded
                .as_deref()
                .map(|s| format!("; serial {s} is superseded"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

/// `rke2-hub admin-cert revoke NAME`: the hub refuses NAME's certificate from its next call
/// on (the running hub reads the same database). Audited.
///
/// # Errors
/// When the state dir has no hub database or NAME has no certificate recorded.
pub fn admin_cert_revoke(args: &AdminCertRevokeArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let store = open_existing_store(&args.state_dir)?;
    let actor = format!("uid:{}", nix::unistd::getuid().as_raw());
    let record = store.revoke_admin(&args.name, &actor, args.dry_run, now)?;
    let serial = record.serial.as_deref().unwrap_or("(not recorded)");
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "dry_run": args.dry_run,
                "cn": format!("admin:{}", args.name),
                "revoked_serial": record.serial,
            })
        ),
        Output::Table => println!(
            "{} admin:{} (certificate serial {serial})",
            if args.dry_run {
                "dry run: would revoke"
            } else {
                "revoked"
            },
            args.name
        ),
    }
    Ok(())
}

/// The hub's database in `state_dir`, which must exist already (commands other than `serve`
/// never create one beside a wrong state dir).
fn open_existing_store(state_dir: &Path) -> anyhow::Result<crate::store::Store> {
    let path = state_dir.join("hub.db");
    if !path.exists() {
        anyhow::bail!(
            "no hub database in {} (expected {}); pass the hub's --state-dir",
            state_dir.display(),
            path.display()
        );
    }
    Ok(crate::store::Store::open(&path)?)
}
