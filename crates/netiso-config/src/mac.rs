//! The one Ethernet address type of trove-netiso: how Trove names the tenant NIC (`eth1.json`
//! `mac_address`), how the kernel reports a link (`IFLA_ADDRESS`), and what the hostnic plugin
//! is given. One type, so a MAC read from a Trove file and one read from netlink compare as
//! the same NIC whatever case each was written in.

use std::fmt;
use std::str::FromStr;

/// A 48-bit MAC address, shown in lowercase colon form (`fa:16:3e:12:34:56`), as Neutron
/// writes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress([u8; 6]);

/// A string that is not a MAC address in Neutron's form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six colon-separated pairs of hex digits")]
#[non_exhaustive]
pub struct MacParseError {
    /// The text that was refused.
    pub input: String,
}

impl MacAddress {
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

impl FromStr for MacAddress {
    type Err = MacParseError;

    /// Six colon-separated pairs of hex digits, any case (`FA:16:3E:..` and `fa:16:3e:..`
    /// are the same address).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || MacParseError {
            input: text.chars().take(64).collect(),
        };
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(refused)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refused());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| refused())?;
        }
        if parts.next().is_some() {
            return Err(refused());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddress({self})")
    }
}

/// Written as its text form (`fa:16:3e:12:34:56`), as in `eth1.json`.
impl serde::Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_displays_lowercase() {
        let mac: MacAddress = "FA:16:3E:12:34:5f".parse().expect("a MAC");
        assert_eq!(mac.octets(), [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x5f]);
        assert_eq!(mac.to_string(), "fa:16:3e:12:34:5f");
        assert_eq!(format!("{mac:?}"), "MacAddress(fa:16:3e:12:34:5f)");
    }

    #[test]
    fn refuses_malformed_text_and_names_it() {
        for bad in [
            "",
            "fa:16:3e:12:34",
            "fa:16:3e:12:34:56:78",
            "fa:16:3e:12:34:5",
            "fa-16-3e-12-34-5f",
            "zz:16:3e:12:34:56",
            "fa:16:3e:12:34:+5",
            "fa16:3e:12:34:56:7",
        ] {
            let err = bad.parse::<MacAddress>().expect_err(bad);
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn from_slice_needs_six_bytes() {
        assert!(MacAddress::from_slice(&[1, 2, 3, 4, 5, 6]).is_some());
        assert!(MacAddress::from_slice(&[1, 2, 3, 4, 5]).is_none());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let mac = MacAddress::new([0xfa, 0x16, 0x3e, 0, 0, 1]);
        let json = serde_json::to_string(&mac).expect("serialise");
        assert_eq!(json, "\"fa:16:3e:00:00:01\"");
        assert_eq!(
            serde_json::from_str::<MacAddress>(&json).expect("parse"),
            mac
        );
        assert!(serde_json::from_str::<MacAddress>("\"nope\"").is_err());
    }
}
