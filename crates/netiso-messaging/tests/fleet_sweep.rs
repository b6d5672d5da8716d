//! The fleet client against several in-process guests on the real broker, each with its own
//! instance key: every outcome kind (answered, refused, timed out, failed) for the right
//! guest, and no more calls in flight than the concurrency allows.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netiso_messaging::{
    Args, CallError, Context, Dispatcher, FleetClient, Guest, HandlerError, InstanceKey, Outcome,
    RpcServer, Serializer, ServerConfig, SweepOptions, Target, Transport, TransportError,
};
use serde_json::{Map, Value, json};

use common::{connect, test_options, unique};

/// How a test guest answers `rpc_ping`.
#[derive(Clone, Copy)]
enum Behaviour {
    Answer,
    Refuse,
    Hang,
}

/// Calls in flight across all test guests, and the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn guest(
    transport: &Transport,
    exchange: &str,
    behaviour: Behaviour,
    in_flight: &Arc<InFlight>,
) -> (Guest, RpcServer) {
    let id = uuid::Uuid::new_v4().to_string();
    let key_text = uuid::Uuid::new_v4().simple().to_string();
    let key = InstanceKey::new(&key_text).unwrap();
    let mut dispatcher = Dispatcher::new("1.3").unwrap();
    let in_flight = Arc::clone(in_flight);
    dispatcher.register("rpc_ping", move |_ctx: Context, args: Args| {
        let in_flight = Arc::clone(&in_flight);
        async move {
            args.finish()?;
            in_flight.enter();
            let answer = match behaviour {
                Behaviour::Answer => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(json!(true))
                }
                Behaviour::Refuse => Err(HandlerError::new("not today")),
                Behaviour::Hang => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(json!(true))
                }
            };
            in_flight.leave();
            answer
        }
    });
    let server = RpcServer::start(
        transport,
        ServerConfig::new(
            exchange,
            Target::guest_agent(&id),
            Serializer::Secure(key.clone()),
        )
        .with_max_concurrency(4),
        dispatcher,
    )
    .await
    .unwrap();
    (Guest::new(id, Some(key)), server)
}

#[tokio::test]
async fn every_guest_gets_its_own_outcome() {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("fleet");
    let in_flight = Arc::new(InFlight::default());
    let mut guests = Vec::new();
    let mut servers = Vec::new();
    let behaviours = [
        Behaviour::Answer,
        Behaviour::Answer,
        Behaviour::Refuse,
        Behaviour::Answer,
        Behaviour::Hang,
        Behaviour::Answer,
        Behaviour::Answer,
    ];
    for behaviour in behaviours {
        let (guest, server) = guest(&transport, &exchange, behaviour, &in_flight).await;
        guests.push(guest);
        servers.push(server);
    }
    // A guest whose agent never started: no queue is bound for its topic.
    let absent = Guest::new(
        uuid::Uuid::new_v4().to_string(),
        Some(InstanceKey::new(&uuid::Uuid::new_v4().simple().to_string()).unwrap()),
    );
    guests.push(absent);

    let fleet = FleetClient::new(&transport, &exchange);
    let options = SweepOptions::new(NonZeroUsize::new(2).unwrap(), Duration::from_millis(1500));
    let sweep = fleet
        .sweep(
            &guests,
            "rpc_ping",
            &Map::new(),
            &Context::fresh(),
            &options,
        )
        .await;

    assert_eq!(sweep.results.len(), guests.len());
    for (index, (result, guest)) in sweep.results.iter().zip(&guests).enumerate() {
        assert_eq!(result.guest_id, guest.id, "results keep the guests' order");
        match (behaviours.get(index), &result.outcome) {
            (Some(Behaviour::Answer), Outcome::Answered(value)) => {
                assert_eq!(value, &Value::Bool(true))
            }
            (Some(Behaviour::Refuse), Outcome::Refused { class, message }) => {
                assert_eq!(class, "GuestError");
                assert_eq!(message, "not today");
            }
            (Some(Behaviour::Hang), Outcome::TimedOut) => {
                assert!(result.elapsed >= options.timeout);
            }
            (
                None,
                Outcome::Failed(CallError::Transport(TransportError::Returned { code, .. })),
            ) => {
                assert_eq!(*code, 312, "NO_ROUTE for the absent guest");
            }
            (_, other) => panic!("guest {index}: unexpected outcome {other:?}"),
        }
    }
    assert_eq!(sweep.count(Outcome::is_answered), 5);
    assert!(sweep.answered_quantile(0.5).unwrap() >= Duration::from_millis(50));
    assert!(
        in_flight.most.load(Ordering::SeqCst) <= 2,
        "at most 2 calls in flight, saw {}",
        in_flight.most.load(Ordering::SeqCst)
    );

    fleet.close().await;
    for server in servers {
        server.stop().await;
    }
    for guest in &guests {
        let target = Target::guest_agent(&guest.id);
        for queue in [target.topic.clone(), target.routing_key()] {
            transport.delete_queue(&queue).await.unwrap();
        }
    }
    transport.delete_exchange(&exchange).await.unwrap();
}

#[tokio::test]
async fn a_guest_keyed_differently_does_not_answer() {
    common::init_tracing();
    let transport = connect(test_options()).await;
    let exchange = unique("fleet-key");
    let in_flight = Arc::new(InFlight::default());
    let (guest, server) = guest(&transport, &exchange, Behaviour::Answer, &in_flight).await;
    let wrong_key = Guest::new(
        guest.id.clone(),
        Some(InstanceKey::new(&uuid::Uuid::new_v4().simple().to_string()).unwrap()),
    );
    let fleet = FleetClient::new(&transport, &exchange);
    let options = SweepOptions::new(NonZeroUsize::new(4).unwrap(), Duration::from_millis(1500));
    let sweep = fleet
        .sweep(
            &[wrong_key, guest.clone()],
            "rpc_ping",
            &Map::new(),
            &Context::fresh(),
            &options,
        )
        .await;
    let [wrong, right] = sweep.results.as_slice() else {
        panic!("two results expected, got {:?}", sweep.results);
    };
    assert!(
        !wrong.outcome.is_answered(),
        "a request under another key must not be served: {:?}",
        wrong.outcome
    );
    assert!(right.outcome.is_answered(), "{:?}", right.outcome);
    assert_eq!(in_flight.most.load(Ordering::SeqCst), 1);

    fleet.close().await;
    server.stop().await;
    let target = Target::guest_agent(&guest.id);
    for queue in [target.topic.clone(), target.routing_key()] {
        transport.delete_queue(&queue).await.unwrap();
    }
    transport.delete_exchange(&exchange).await.unwrap();
}
