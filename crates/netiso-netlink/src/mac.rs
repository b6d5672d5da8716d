//! Ethernet MAC addresses: how Trove names the tenant NIC (`eth1.json` `mac_address`).

use std::{fmt, str::FromStr};

/// A 48-bit MAC address, shown in lowercase colon form (`fa:16:3e:12:34:56`), as Neutron writes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

/// Written as its text form (`fa:16:3e:12:34:56`), as in `eth1.json`.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex pairs separated by ':' or '-'")]
pub struct MacParseError {
    /// The text that was refused.
    pub input: String,
}

impl MacAddr {
    /// Wraps raw octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The raw octets, as the kernel stores them in `IFLA_ADDRESS`.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Reads a link-layer address from the kernel; `None` unless it is exactly 6 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_owned(),
        };
        let separator = if s.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(separator);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_displays_lowercase() {
        let mac: MacAddr = "FA:16:3E:12:34:5f".parse().unwrap();
        assert_eq!(mac.octets(), [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x5f]);
        assert_eq!(mac.to_string(), "fa:16:3e:12:34:5f");
        assert_eq!("fa-16-3e-12-34-5f".parse::<MacAddr>().unwrap(), mac);
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "",
            "fa:16:3e:12:34",
            "fa:16:3e:12:34:56:78",
            "fa:16:3e:12:34:5",
            "zz:16:3e:12:34:56",
            "fa:16:3e:12:34:+5",
            "fa16:3e:12:34:56:7",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn from_slice_needs_six_bytes() {
        assert!(MacAddr::from_slice(&[1, 2, 3, 4, 5, 6]).is_some());
        assert!(MacAddr::from_slice(&[1, 2, 3, 4, 5]).is_none());
    }
}
