//! Option values with rules of their own, parsed from text: [`HostPort`], [`SppUrl`],
//! sizes (`-b`, `-C`, `--upload-rate`), subnets, ports, host names.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use super::defaults::{
    BLOCK_SIZE_ALIGN_BYTES, DEFAULT_PORT, MAX_BLOCK_SIZE_BYTES, MIN_BLOCK_SIZE_BYTES,
    MIN_DISK_CACHE_BYTES, MIN_UPLOAD_RATE_BYTES_PER_S,
};

/// Longest DNS name (RFC 1035), for host name checks.
const MAX_HOST_NAME_LEN: usize = 253;

/// A node address as given to `-l` or `-S`: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address; IPv6 addresses are kept without brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// `host`, `host:port`, `[v6]`, `[v6]:port`, `1.2.3.4:5`; default port 1111.
    /// A bare IPv6 address (`::1`) is accepted too and gets the default port.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("'{s}' is not host[:port] ({why})");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            let addr = Ipv6Addr::from_str(inside)
                .map_err(|_| bad("not an IPv6 address inside the brackets"))?;
            let port = if after.is_empty() {
                DEFAULT_PORT
            } else if let Some(p) = after.strip_prefix(':') {
                parse_connect_port(p).map_err(|why| bad(&why))?
            } else {
                return Err(bad("unexpected text after ']'"));
            };
            return Ok(HostPort {
                host: addr.to_string(),
                port,
            });
        }
        // More than one ':' without brackets can only be a bare IPv6 address.
        if s.matches(':').count() > 1 {
            let addr = Ipv6Addr::from_str(s)
                .map_err(|_| bad("write IPv6 addresses as [addr] or [addr]:port"))?;
            return Ok(HostPort {
                host: addr.to_string(),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, parse_connect_port(p).map_err(|why| bad(&why))?),
            None => (s, DEFAULT_PORT),
        };
        check_host_name(host).map_err(|why| bad(&why))?;
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPort::parse(s)
    }
}

/// An `spp://host[:port]/path` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SppUrl {
    /// Host and port (1111 when the URL names none).
    pub origin: HostPort,
    /// The path as written in the URL (percent-encoding kept), starting with '/'.
    pub path: String,
}

impl SppUrl {
    /// Parses and validates an spp:// URL: scheme spp, a host, a path other than "/".
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an spp:// URL (expected spp://host[:port]/path)");
        let url = url::Url::parse(s).map_err(|_| bad())?;
        if url.scheme() != "spp" {
            return Err(bad());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(bad()),
        };
        let path = url.path();
        if path.is_empty() || path == "/" {
            return Err(bad());
        }
        Ok(SppUrl {
            origin: HostPort {
                host,
                port: url.port().unwrap_or(DEFAULT_PORT),
            },
            path: path.to_string(),
        })
    }
}

/// Parses sizes with k/M/G/T suffixes as powers of 1024 ("256k", "1G", "512", "1.5M"), via parse-size.
pub fn parse_size_bytes(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|_| {
            format!(
                "'{s}' is not a size (a number with an optional k, M, G or T suffix, \
                 powers of 1024, e.g. 256k or 1.5M)"
            )
        })
}

/// `-b`: size syntax, a multiple of 4 KiB, within [16 KiB, 16 MiB].
pub(super) fn parse_block_size(s: &str) -> Result<u32, String> {
    let bytes = parse_size_bytes(s)?;
    // Show the byte count too when the operator wrote a suffix.
    let shown = if s.trim() == bytes.to_string() {
        bytes.to_string()
    } else {
        format!("{s} ({bytes} bytes)")
    };
    if bytes % u64::from(BLOCK_SIZE_ALIGN_BYTES) != 0 {
        return Err(format!("{shown} is not a multiple of 4 KiB"));
    }
    if bytes < u64::from(MIN_BLOCK_SIZE_BYTES) || bytes > u64::from(MAX_BLOCK_SIZE_BYTES) {
        return Err(format!("{shown} is outside 16 KiB..16 MiB"));
    }
    u32::try_from(bytes).map_err(|_| format!("{shown} is outside 16 KiB..16 MiB"))
}

/// `-C`: size syntax, at least [`MIN_DISK_CACHE_BYTES`].
pub(super) fn parse_disk_cache_size(s: &str) -> Result<u64, String> {
    let bytes = parse_size_bytes(s)?;
    if bytes < MIN_DISK_CACHE_BYTES {
        let shown = if s.trim() == bytes.to_string() {
            bytes.to_string()
        } else {
            format!("{s} ({bytes} bytes)")
        };
        return Err(format!(
            "{shown} is below the minimum of 64 KiB (the cache must have room for whole blocks)"
        ));
    }
    Ok(bytes)
}

/// `--upload-rate`: size syntax, at least [`MIN_UPLOAD_RATE_BYTES_PER_S`] a second.
pub(super) fn parse_upload_rate(s: &str) -> Result<u64, String> {
    let rate = parse_size_bytes(s)?;
    if rate < MIN_UPLOAD_RATE_BYTES_PER_S {
        return Err(format!(
            "{s} is below the minimum of 16k bytes per second (one of the smallest blocks)"
        ));
    }
    Ok(rate)
}

/// `-n`/`-N`: a subnet in CIDR form ("10.0.0.0/8", "2001:db8::/32").
pub(super) fn parse_subnet(s: &str) -> Result<ipnet::IpNet, String> {
    ipnet::IpNet::from_str(s).map_err(|_| format!("'{s}' is not a subnet in CIDR form"))
}

/// A port a node can be reached on: 1..=65535.
fn parse_connect_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to".to_string()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("'{p}' is not a port number")),
    }
}

/// A DNS name or IPv4 address as it may appear in a URL's host.
fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    if host.len() > MAX_HOST_NAME_LEN {
        return Err(format!("host longer than {MAX_HOST_NAME_LEN} characters"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !host.chars().all(valid) {
        return Err("a host name has only letters, digits, '-', '.' and '_'".to_string());
    }
    Ok(())
}

/// `-A`: a host name or IPv4 address, lowercased (hosts compare case-insensitively), or
/// an IPv6 address with or without brackets, kept in canonical form without them as
/// [`HostPort`] does.
pub(super) fn normalize_allowed_host(s: &str) -> Result<String, String> {
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(addr) = Ipv6Addr::from_str(unbracketed) {
        return Ok(addr.to_string());
    }
    check_host_name(s)?;
    Ok(s.to_ascii_lowercase())
}
