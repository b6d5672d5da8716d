//! The plugin's rules for the MACs it is given. The type is netiso-config's
//! [`MacAddress`] (compared as bytes, shown lowercase), so
//! `FA:16:3E:..` from a Trove file and `fa:16:3e:..` from the kernel are the same NIC.

use netiso_config::tenant_nic::MacAddress;

/// Why a string is not a usable NIC MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a unicast MAC address like fa:16:3e:12:34:56: {reason}")]
pub struct MacParseError {
    input: String,
    reason: &'static str,
}

/// Parses a MAC that must name one NIC (`hostnic_mac`, `Interface.MacAddress`, the state file).
///
/// Stricter than netiso-config's parser, which accepts any six hex pairs: the all-zero and
/// multicast addresses name no NIC and are refused. Octets may be in any case (Trove's schema
/// wants all-lowercase or all-uppercase; mixed case is accepted as the plugin always did).
pub fn parse_nic_mac(input: &str) -> Result<MacAddress, MacParseError> {
    let error = |reason| MacParseError {
        input: input.chars().take(64).collect(),
        reason,
    };
    let mac: MacAddress = input
        .parse()
        .map_err(|_| error("expected 6 colon-separated octets of two hex digits each"))?;
    if mac.octets() == [0; 6] {
        return Err(error("the all-zero address names no NIC"));
    }
    if mac.octets()[0] & 1 == 1 {
        return Err(error("a multicast address names no NIC"));
    }
    Ok(mac)
}

/// `#[serde(with = "crate::mac::serde_nic_mac")]`: the canonical lowercase spelling out,
/// [`parse_nic_mac`] in.
pub(crate) mod serde_nic_mac {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{MacAddress, parse_nic_mac};

    pub(crate) fn serialize<S: Serializer>(
        mac: &MacAddress,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(mac)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<MacAddress, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_nic_mac(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_prints_lowercase() {
        let upper = parse_nic_mac("FA:16:3E:12:34:5B").unwrap();
        let lower = parse_nic_mac("fa:16:3e:12:34:5b").unwrap();
        let mixed = parse_nic_mac("Fa:16:3e:12:34:5B").unwrap();
        assert_eq!(upper, lower);
        assert_eq!(mixed, lower);
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
            "fa:16:3e:12:34:56:",
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
        ] {
            let err = parse_nic_mac(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a unicast MAC"),
                "{bad}: {err}"
            );
        }
        assert!(
            parse_nic_mac("01:00:5e:00:00:01")
                .unwrap_err()
                .to_string()
                .contains("multicast")
        );
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "serde_nic_mac")]
        mac: MacAddress,
    }

    #[test]
    fn serde_round_trip_uses_the_canonical_spelling() {
        let holder: Holder = serde_json::from_str(r#"{"mac": "FA:16:3E:00:00:01"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&holder).unwrap(),
            r#"{"mac":"fa:16:3e:00:00:01"}"#
        );
        for bad in [r#"{"mac": "nope"}"#, r#"{"mac": "01:00:5e:00:00:01"}"#] {
            let err = serde_json::from_str::<Holder>(bad).err().unwrap();
            assert!(err.to_string().contains("not a unicast MAC"), "{err}");
        }
    }
}
