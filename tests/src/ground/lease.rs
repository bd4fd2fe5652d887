//! Loopback addresses for nodes, leased machine-wide so parallel test processes never collide.
//!
//! Nodes share the host's network namespace and bind RKE2's real ports on their own loopback
//! address, so two live nodes must never get the same address, not even when two engineers run
//! test binaries at once. A lease is an exclusive `flock` on a file named after the address in
//! a folder under the host's temp dir; the kernel drops it when the holder exits in any way,
//! so a crashed test never leaks an address.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::error::{GroundError, Result, io_err};

/// The range automatic leases are taken from: 127.0.10.1 .. 127.0.19.254.
const FIRST_THIRD_OCTET: u8 = 10;
const LAST_THIRD_OCTET: u8 = 19;

/// An address held for one node; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct IpLease {
    /// The leased address.
    ip: Ipv4Addr,
    /// The locked file; the lock lives exactly as long as this handle.
    _lock: File,
}

impl IpLease {
    /// Leases `ip`, failing with [`GroundError::AddressInUse`] when a live node holds it.
    pub fn exact(ip: Ipv4Addr) -> Result<Self> {
        Self::try_lease(ip)?.ok_or(GroundError::AddressInUse(ip))
    }

    /// Leases the lowest free address of 127.0.10.1 - 127.0.19.254.
    pub fn any() -> Result<Self> {
        for third in FIRST_THIRD_OCTET..=LAST_THIRD_OCTET {
            for fourth in 1..=254 {
                if let Some(lease) = Self::try_lease(Ipv4Addr::new(127, 0, third, fourth))? {
                    return Ok(lease);
                }
            }
        }
        Err(GroundError::NoFreeAddress)
    }

    /// The leased address.
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn try_lease(ip: Ipv4Addr) -> Result<Option<Self>> {
        let dir = lease_dir();
        fs::create_dir_all(&dir).map_err(io_err("create folder", &dir))?;
        let path = dir.join(format!("{ip}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { ip, _lock: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
        }
    }
}

/// Where lease files live: on the host, outside every node's private folders.
fn lease_dir() -> PathBuf {
    std::env::temp_dir().join("rke2ops-ground-leases")
}
