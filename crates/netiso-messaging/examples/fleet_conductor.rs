//! `fleet_conductor`: a stand-in for Trove's conductor that records the heartbeats of a fleet
//! of guests, for measuring their rate and lateness (`cargo xtask bench fleet`).
//!
//! ```text
//! fleet_conductor [--url URL] EXCHANGE CONDUCTOR_QUEUE GUESTS_FILE
//! ```
//!
//! Consumes `CONDUCTOR_QUEUE` on `EXCHANGE` as the conductor does, prints `READY` once
//! consuming, then one line per heartbeat until stdin closes (then deletes the queue):
//!
//! ```text
//! heartbeat GUEST_ID ARRIVED_UNIX_S SENT_UNIX_S STATUS
//! ```
//! `SENT` is the guest's own `sent` argument, decrypted with the guest's key (the guest list of
//! `fleet_sweep`); a message it cannot read is counted and reported at the end as
//! `unreadable N`.

#![allow(clippy::print_stdout)] // a measuring tool: its output is the point

use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netiso_config::TransportUrl;
use netiso_messaging::envelope::{self, Request};
use netiso_messaging::topology::Topology;
use netiso_messaging::{BrokerConfig, RabbitOptions, Serializer, Transport};
use serde_json::Value;
use tokio::io::AsyncReadExt;

type AnyResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[path = "common/guests.rs"]
mod guests;

const USAGE: &str = "usage: fleet_conductor [--url URL] EXCHANGE CONDUCTOR_QUEUE GUESTS_FILE";

/// The heartbeat's guest, `sent` and status, if it is one this conductor can read.
fn heartbeat(body: &[u8], keys: &HashMap<String, Serializer>) -> Option<(String, f64, String)> {
    let request = Request::from_message(envelope::unwrap(body).ok()?).ok()?;
    if request.method != "heartbeat" {
        return None;
    }
    let guest = request.context.get("csz-instance-id")?.as_str()?.to_owned();
    let serializer = keys.get(&guest)?;
    let sent = serializer
        .deserialize_entity(request.args.get("sent")?.clone())
        .ok()?
        .as_f64()?;
    let payload = serializer
        .deserialize_entity(request.args.get("payload")?.clone())
        .ok()?;
    let status = payload
        .get("service_status")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    Some((guest, sent, status))
}

async fn run(url: &str, exchange: &str, queue: &str, guests_file: &str) -> AnyResult<()> {
    let keys: HashMap<String, Serializer> = guests::read(guests_file)?
        .into_iter()
        .map(|guest| (guest.id, guest.serializer))
        .map(|(id, serializer)| {
            let serializer = match serializer {
                Serializer::Secure(key) => Serializer::Conductor {
                    key,
                    instance_id: id.clone(),
                },
                other => other,
            };
            (id, serializer)
        })
        .collect();
    let parsed = TransportUrl::from_str(url)?;
    let mut options = RabbitOptions::default();
    options.apply_url_query(&parsed.query)?;
    let transport = Transport::connect(
        BrokerConfig::from_transport_url(&parsed)?,
        options,
        Duration::from_secs(15),
    )
    .await?;
    let spec = Topology::new(transport.options()).topic_consumer(exchange, queue);
    let mut consumer = transport
        .consume(vec![spec], vec![queue.to_owned()])
        .await?;
    println!("READY");
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    let mut unreadable = 0_u64;
    loop {
        let delivery = tokio::select! {
            delivery = consumer.deliveries.recv() => delivery,
            _ = stdin.read_to_end(&mut sink) => break,
        };
        let Some(delivery) = delivery else { break };
        let arrived = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        delivery.ack().await?;
        match heartbeat(&delivery.body, &keys) {
            Some((guest, sent, status)) => {
                println!("heartbeat {guest} {arrived:.6} {sent:.6} {status}")
            }
            None => unreadable += 1,
        }
    }
    println!("unreadable {unreadable}");
    consumer.stop().await;
    transport.close();
    Ok(())
}

/// One thread: the conductor's own cost stays out of the way of the guests it listens to.
fn main() -> AnyResult<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut url = std::env::var("NETISO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    if args.first().map(String::as_str) == Some("--url") {
        if args.len() < 2 {
            return Err(USAGE.into());
        }
        url = args.remove(1);
        args.remove(0);
    }
    let [exchange, queue, guests_file] = args.as_slice() else {
        return Err(USAGE.into());
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(&url, exchange, queue, guests_file))
}
