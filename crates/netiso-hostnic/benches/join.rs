//! Cost of the plugin's hot path: decoding a call, answering `Join` (tenant file read, state
//! lookup, NIC lookup), and the real link lookup by MAC in the current namespace.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use netiso_hostnic::protocol::Endpoint;
use netiso_hostnic::{
    Driver, LocateError, MacAddress, NetnsNicLocator, NicLocator, StateStore, decode_request,
};

const NET: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
const JOIN: &str = r#"{"NetworkID": "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f", "EndpointID": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9", "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": {}}"#;
const ETH1: &str = r#"{"mac_address": "fa:16:3e:12:34:56", "ipv4_address": "10.0.0.15", "ipv4_cidr": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1", "ipv4_host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}], "ipv6_address": "fd00::5", "ipv6_cidr": "fd00::/64", "ipv6_host_routes": []}"#;

struct FixedLocator;

impl NicLocator for FixedLocator {
    fn find_in_plugin_ns(&self, _mac: MacAddress) -> Result<Option<String>, LocateError> {
        Ok(Some("ens4".to_owned()))
    }

    fn find_in_sandboxes(
        &self,
        _dir: &Path,
        _mac: MacAddress,
    ) -> Result<Option<PathBuf>, LocateError> {
        Ok(None)
    }
}

fn benches(c: &mut Criterion) {
    c.bench_function("decode_request Join", |b| {
        b.iter(|| {
            decode_request(black_box(Endpoint::Join.path()), black_box(JOIN.as_bytes())).unwrap()
        })
    });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eth1.json"), ETH1).unwrap();
    let mut state = StateStore::open(&dir.path().join("hostnic.json")).unwrap();
    let entry =
        netiso_hostnic::state::NetworkEntry::new("fa:16:3e:12:34:56".parse().unwrap(), None);
    state.insert(NET, entry).unwrap();
    let driver = Driver::new(state, dir.path().join("eth1.json"), Arc::new(FixedLocator));
    c.bench_function("decode + handle Join (fixed locator)", |b| {
        b.iter(|| {
            driver
                .handle(decode_request(Endpoint::Join.path(), JOIN.as_bytes()).unwrap())
                .unwrap()
        })
    });

    let locator = NetnsNicLocator::new().unwrap();
    let absent: MacAddress = "02:00:5e:10:20:30".parse().unwrap();
    c.bench_function(
        "NetnsNicLocator::find_in_plugin_ns (rtnetlink link dump)",
        |b| b.iter(|| locator.find_in_plugin_ns(black_box(absent)).unwrap()),
    );
}

criterion_group!(join, benches);
criterion_main!(join);
