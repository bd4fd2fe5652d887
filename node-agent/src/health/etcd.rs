//! etcd on servers, through the `etcd-client` crate with RKE2's `etcd/client.crt`: members,
//! each member's health, the leader, alarms, and the pure decision whether quorum survives
//! this member going down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmType, Certificate, Client, ConnectOptions, Identity, TlsOptions,
};
use serde::Serialize;

use super::HealthError;

/// Files etcd clients use on an RKE2 server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCredentials {
    /// `server/tls/etcd/server-ca.crt`.
    pub ca: PathBuf,
    /// `server/tls/etcd/client.crt`.
    pub cert: PathBuf,
    /// `server/tls/etcd/client.key`.
    pub key: PathBuf,
}

impl EtcdCredentials {
    /// RKE2's files under `data_dir`.
    #[must_use]
    pub fn rke2(data_dir: &Path) -> Self {
        let etcd = data_dir.join("server/tls/etcd");
        Self {
            ca: etcd.join("server-ca.crt"),
            cert: etcd.join("client.crt"),
            key: etcd.join("client.key"),
        }
    }
}

/// One member and whether it answered a status request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberHealth {
    /// Member id.
    pub id: u64,
    /// Member name (RKE2 uses the node name plus a suffix).
    pub name: String,
    /// Its client URLs.
    pub client_urls: Vec<String>,
    /// Answered a status request in time, without errors.
    pub healthy: bool,
    /// Why not, when unhealthy.
    pub problem: Option<String>,
}

/// The cluster as seen from one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdHealth {
    /// Every member.
    pub members: Vec<MemberHealth>,
    /// The leader's id, if one is known.
    pub leader: Option<u64>,
    /// The id of the member we asked (this node's).
    pub local_member: u64,
    /// Active alarms (`NOSPACE`, `CORRUPT`).
    pub alarms: Vec<String>,
}

/// Whether taking one member down keeps quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumVerdict {
    /// Members in the cluster.
    pub members: usize,
    /// Quorum size (n/2 + 1).
    pub quorum: usize,
    /// Healthy members other than the one going down.
    pub healthy_others: usize,
    /// `healthy_others >= quorum`.
    pub survives: bool,
}

/// Pure: does quorum survive `going_down` (a member id) going down?
#[must_use]
pub fn quorum_without(health: &EtcdHealth, going_down: u64) -> QuorumVerdict {
    let members = health.members.len();
    let quorum = members / 2 + 1;
    let healthy_others = health
        .members
        .iter()
        .filter(|m| m.id != going_down && m.healthy)
        .count();
    QuorumVerdict {
        members,
        quorum,
        healthy_others,
        survives: healthy_others >= quorum,
    }
}

fn credential_error(path: &Path, e: impl ToString) -> HealthError {
    HealthError::Credentials {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn options(creds: &EtcdCredentials, timeout: Duration) -> Result<ConnectOptions, HealthError> {
    let ca = std::fs::read(&creds.ca).map_err(|e| credential_error(&creds.ca, e))?;
    let cert = std::fs::read(&creds.cert).map_err(|e| credential_error(&creds.cert, e))?;
    let key = std::fs::read(&creds.key).map_err(|e| credential_error(&creds.key, e))?;
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    Ok(ConnectOptions::new()
        .with_tls(tls)
        .with_timeout(timeout)
        .with_connect_timeout(timeout))
}

/// Asks the member at `endpoint` (e.g. `https://127.0.10.1:2379`) for the cluster, then asks
/// every member for its status.
///
/// # Errors
/// [`HealthError`] when credentials are unusable or the local member does not answer.
pub async fn health(
    endpoint: &str,
    creds: &EtcdCredentials,
    timeout: Duration,
) -> Result<EtcdHealth, HealthError> {
    let unreachable = |e: etcd_client::Error| HealthError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    };
    let mut client = Client::connect([endpoint], Some(options(creds, timeout)?))
        .await
        .map_err(unreachable)?;
    let status = client.status().await.map_err(unreachable)?;
    let local_member = status.header().map_or(0, |h| h.member_id());
    let leader = Some(status.leader()).filter(|l| *l != 0);
    let list = client.member_list().await.map_err(unreachable)?;
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(unreachable)?
        .alarms()
        .iter()
        .map(|a| format!("{:?}", a.alarm()))
        .collect();
    let mut members = Vec::new();
    for member in list.members() {
        let urls: Vec<String> = member.client_urls().to_vec();
        let (healthy, problem) = if member.id() == local_member {
            (status.errors().is_empty(), status.errors().first().cloned())
        } else {
            member_status(&urls, creds, timeout).await
        };
        members.push(MemberHealth {
            id: member.id(),
            name: member.name().to_owned(),
            client_urls: urls,
            healthy,
            problem,
        });
    }
    Ok(EtcdHealth {
        members,
        leader,
        local_member,
        alarms,
    })
}

async fn member_status(
    urls: &[String],
    creds: &EtcdCredentials,
    timeout: Duration,
) -> (bool, Option<String>) {
    if urls.is_empty() {
        return (
            false,
            Some("member has no client URLs (not started yet)".to_owned()),
        );
    }
    let attempt = async {
        let mut client = Client::connect(
            urls,
            Some(options(creds, timeout).map_err(|e| e.to_string())?),
        )
        .await
        .map_err(|e| e.to_string())?;
        let status = client.status().await.map_err(|e| e.to_string())?;
        match status.errors().first() {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e)),
        Err(_) => (false, Some(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(healthy: &[bool]) -> EtcdHealth {
        EtcdHealth {
            members: healthy
                .iter()
                .enumerate()
                .map(|(i, h)| MemberHealth {
                    id: i as u64 + 1,
                    name: format!("m{i}"),
                    client_urls: vec![],
                    healthy: *h,
                    problem: None,
                })
                .collect(),
            leader: Some(1),
            local_member: 1,
            alarms: vec![],
        }
    }

    #[test]
    fn three_healthy_members_survive_one_going_down() {
        let v = quorum_without(&cluster(&[true, true, true]), 1);
        assert_eq!((v.quorum, v.healthy_others, v.survives), (2, 2, true));
    }

    #[test]
    fn with_one_member_already_down_another_may_not_go() {
        let v = quorum_without(&cluster(&[true, true, false]), 1);
        assert_eq!((v.healthy_others, v.survives), (1, false));
    }

    #[test]
    fn the_down_member_itself_may_be_restarted() {
        // Member 3 is down already; taking member 3 "down" loses nothing more.
        assert!(quorum_without(&cluster(&[true, true, false]), 3).survives);
    }

    #[test]
    fn single_member_cluster_never_survives_its_member_going_down() {
        let v = quorum_without(&cluster(&[true]), 1);
        assert!(!v.survives);
    }

    #[test]
    fn five_members_tolerate_two_down() {
        assert!(quorum_without(&cluster(&[true, true, true, true, false]), 1).survives);
        assert!(!quorum_without(&cluster(&[true, true, true, false, false]), 1).survives);
    }
}
