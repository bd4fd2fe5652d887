//! The operator commands: a gRPC client of the hub's admin socket, and the output.

use std::path::Path;

use anyhow::Context as _;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_client::AdminServiceClient;
use time::OffsetDateTime;
use tonic::transport::Channel;

use crate::cli::{CertsArgs, ListArgs, Output, TokenCreateArgs, render};
use crate::convert;
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
    if args.dry_run {
        match args.client.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"dry_run": true, "single_use": true, "ttl_seconds": args.ttl.as_secs()})
            ),
            Output::Table => println!(
                "dry run: would create a single-use join token valid for {}",
                humantime::format_duration(args.ttl)
            ),
        }
        return Ok(());
    }
    let mut client = connect(&args.client).await?;
    let response = client
        .create_token(pb::CreateTokenRequest {
            ttl_seconds: args.ttl.as_secs(),
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
    match args.client.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"token": response.token, "ca_pin": response.ca_pin, "expires_at": expires, "hub_address": response.hub_address})
        ),
        Output::Table => {
            println!("token:        {}", response.token);
            println!("hub CA pin:   {}", response.ca_pin);
            println!("expires:      {expires}");
            println!("\nOn each node, in /etc/rke2-ops/node-agent.toml:");
            println!(
                "  hub_address = \"{}\"\n  hub_token = \"{}\"\n  hub_ca_pin = \"{}\"",
                response.hub_address, response.token, response.ca_pin
            );
        }
    }
    Ok(())
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
    }
}

/// `rke2-hub nodes`.
///
/// # Errors
/// When the hub is unreachable or refuses.
pub async fn nodes(args: &ListArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let nodes: Vec<(NodeRecord, u32)> = response
        .nodes
        .iter()
        .map(|n| (node_record(n), n.error_count))
        .collect();
    match args.client.output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = nodes
                .iter()
                .map(|(n, errors)| {
                    let mut doc = serde_json::to_value(n).unwrap_or_default();
                    doc["file_errors"] = (*errors).into();
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

/// `rke2-hub certs`.
///
/// # Errors
/// When the hub is unreachable or refuses (e.g. an unknown node).
pub async fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .list_certificates(pb::ListCertificatesRequest {
            node: args.node.clone().unwrap_or_default(),
            expiring_within_seconds: args.expiring_within.map_or(0, |d| d.as_secs()),
        })
        .await
        .map_err(refused)?
        .into_inner();
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
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"certificates": certs, "errors": errs})
                )?
            );
        }
        Output::Table => print!(
            "{}",
            render::certs(&rows, &errors, OffsetDateTime::now_utc())
        ),
    }
    Ok(())
}

/// `rke2-hub admin-cert create`: issues an admin client certificate with the hub CA and
/// records it in the audit log.
///
/// # Errors
/// When the CA cannot be loaded, the name is invalid, or the files cannot be written.
pub fn admin_cert_create(args: &crate::cli::AdminCertArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    if args.dry_run {
        crate::pki::validate_admin_name(&args.name)?;
        match args.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"dry_run": true, "cn": format!("admin:{}", args.name), "out": args.out})
            ),
            Output::Table => println!(
                "dry run: would issue admin certificate CN=admin:{} (1 year) into {}",
                args.name,
                args.out.display()
            ),
        }
        return Ok(());
    }
    let ca = crate::pki::HubCa::load_or_create(&args.state_dir, now)?;
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
    let store = crate::store::Store::open(&args.state_dir.join("hub.db"))?;
    let actor = format!("uid:{}", nix::unistd::getuid().as_raw());
    store.audit(
        &actor,
        "admin-cert.create",
        &format!("admin:{} serial {}", args.name, issued.serial),
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
            })
        ),
        Output::Table => println!(
            "issued admin:{} (serial {}, until {not_after}) into {}",
            args.name,
            issued.serial,
            args.out.display()
        ),
    }
    Ok(())
}
