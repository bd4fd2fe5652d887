//! systemd's D-Bus API (placeholder: being written).
