//! MAC addresses as Neutron and the Linux kernel spell them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A unicast Ethernet address.
///
/// The tenant NIC is identified only by its Neutron MAC (its name changes when Docker moves it
/// around), so MACs are compared as bytes: `FA:16:3E:..` from a Trove file and `fa:16:3e:..` from
/// the kernel are the same NIC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress([u8; 6]);

/// Why a string is not a usable NIC MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a unicast MAC address like fa:16:3e:12:34:56: {reason}")]
pub struct MacParseError {
    input: String,
    reason: &'static str,
}

impl MacAddress {
    /// Wraps raw octets, as the kernel reports them.
    pub const fn from_octets(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets, for comparing with kernel link addresses.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = MacParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| MacParseError {
            input: input.chars().take(64).collect(),
            reason,
        };
        let mut octets = [0u8; 6];
        let mut groups = input.split(':');
        for octet in &mut octets {
            let group = groups
                .next()
                .ok_or_else(|| error("expected 6 colon-separated octets"))?;
            if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error("each octet must be exactly two hex digits"));
            }
            *octet = u8::from_str_radix(group, 16)
                .map_err(|_| error("each octet must be exactly two hex digits"))?;
        }
        if groups.next().is_some() {
            return Err(error("expected 6 colon-separated octets"));
        }
        if octets == [0; 6] {
            return Err(error("the all-zero address names no NIC"));
        }
        if octets[0] & 1 == 1 {
            return Err(error("a multicast address names no NIC"));
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
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_prints_lowercase() {
        let upper: MacAddress = "FA:16:3E:12:34:5B".parse().unwrap();
        let lower: MacAddress = "fa:16:3e:12:34:5b".parse().unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.to_string(), "fa:16:3e:12:34:5b");
        assert_eq!(upper.octets(), [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x5b]);
    }

    #[test]
    fn rejects_malformed_and_non_unicast() {
        for bad in [
            "",
            "fa:16:3e:12:34",
            "fa:16:3e:12:34:56:78",
            "fa-16-3e-12-34-56",
            "fa:16:3e:12:34:5",
            "fa:16:3e:12:34:+5",
            "fa:16:3e:12:34:zz",
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
        ] {
            let err = bad.parse::<MacAddress>().unwrap_err();
            assert!(
                err.to_string().contains("not a unicast MAC"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn serde_round_trip_uses_the_canonical_spelling() {
        let mac: MacAddress = serde_json::from_str("\"FA:16:3E:00:00:01\"").unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"fa:16:3e:00:00:01\""
        );
        assert!(serde_json::from_str::<MacAddress>("\"nope\"").is_err());
    }
}
