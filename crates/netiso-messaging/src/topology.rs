//! Exchange, queue and binding declarations exactly as oslo.messaging's rabbit driver makes
//! them for a target, so that our declarations are equivalent to Python's on the same broker.

use crate::options::RabbitOptions;

/// An RPC target: the topic, optionally one server, and the API version the server implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Topic, e.g. `guestagent.<id>`.
    pub topic: String,
    /// Server name, e.g. `<id>`; casts and calls to it use `topic.server`.
    pub server: Option<String>,
    /// API version the endpoint implements (servers) or requests (callers), e.g. `1.3`.
    pub version: String,
}

/// The guest API version Trove's `API_LATEST_VERSION` names.
pub const GUEST_API_VERSION: &str = "1.3";

impl Target {
    /// The guest agent's target: topic `guestagent.<id>`, server `<id>`, version 1.3.
    pub fn guest_agent(instance_id: &str) -> Self {
        Self {
            topic: format!("guestagent.{instance_id}"),
            server: Some(instance_id.to_owned()),
            version: GUEST_API_VERSION.to_owned(),
        }
    }

    /// The routing key oslo uses for this target.
    pub fn routing_key(&self) -> String {
        match &self.server {
            Some(server) => format!("{}.{server}", self.topic),
            None => self.topic.clone(),
        }
    }
}

/// AMQP exchange types used by oslo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// The control exchange.
    Topic,
    /// `<topic>_fanout`.
    Fanout,
}

impl ExchangeKind {
    /// The AMQP type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Fanout => "fanout",
        }
    }
}

/// One exchange declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Exchange name.
    pub name: String,
    /// Exchange type.
    pub kind: ExchangeKind,
    /// `durable` flag.
    pub durable: bool,
    /// `auto_delete` flag.
    pub auto_delete: bool,
}

/// A queue argument value, typed as py-amqp encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// Signed 32-bit integer (`I`).
    Int(i32),
    /// Long string (`S`).
    Str(String),
    /// Boolean (`t`).
    Bool(bool),
}

/// One queue declaration (never exclusive, like oslo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// `durable` flag.
    pub durable: bool,
    /// `auto_delete` flag.
    pub auto_delete: bool,
    /// Queue arguments in oslo's order.
    pub arguments: Vec<(String, ArgValue)>,
}

/// A queue to consume, the exchange it is bound to (if any) and the consumer arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Exchange to declare and bind to; `None` for the default exchange.
    pub exchange: Option<ExchangeSpec>,
    /// The queue.
    pub queue: QueueSpec,
    /// Binding key.
    pub routing_key: String,
    /// Consumer arguments (`x-cancel-on-ha-failover`).
    pub consumer_arguments: Vec<(String, ArgValue)>,
}

/// Builds declarations from the `[oslo_messaging_rabbit]` options.
#[derive(Debug, Clone)]
pub struct Topology<'a> {
    options: &'a RabbitOptions,
}

impl<'a> Topology<'a> {
    /// Declarations for these options.
    pub fn new(options: &'a RabbitOptions) -> Self {
        Self { options }
    }

    fn queue_arguments(&self, quorum: bool, ttl_seconds: u32) -> Vec<(String, ArgValue)> {
        let o = self.options;
        let mut args = Vec::new();
        if o.rabbit_ha_queues {
            args.push(("x-ha-policy".into(), ArgValue::Str("all".into())));
        }
        if quorum {
            args.push(("x-queue-type".into(), ArgValue::Str("quorum".into())));
            for (name, value) in [
                ("x-delivery-limit", o.rabbit_quorum_delivery_limit),
                ("x-max-in-memory-length", o.rabbit_quorum_max_memory_length),
                ("x-max-in-memory-bytes", o.rabbit_quorum_max_memory_bytes),
            ] {
                if value > 0 {
                    args.push((name.into(), ArgValue::Int(clamp_i32(u64::from(value)))));
                }
            }
        }
        if ttl_seconds > 0 {
            let ms = u64::from(ttl_seconds) * 1000;
            args.push(("x-expires".into(), ArgValue::Int(clamp_i32(ms))));
        }
        args
    }

    fn consumer_arguments(&self) -> Vec<(String, ArgValue)> {
        if self.options.enable_cancel_on_failover {
            vec![("x-cancel-on-ha-failover".into(), ArgValue::Bool(true))]
        } else {
            Vec::new()
        }
    }

    /// The control (topic) exchange, as both servers and publishers declare it.
    pub fn topic_exchange(&self, name: &str) -> ExchangeSpec {
        ExchangeSpec {
            name: name.to_owned(),
            kind: ExchangeKind::Topic,
            durable: self.options.durable(),
            auto_delete: self.options.amqp_auto_delete,
        }
    }

    /// The `<topic>_fanout` exchange.
    pub fn fanout_exchange(&self, topic: &str) -> ExchangeSpec {
        ExchangeSpec {
            name: format!("{topic}_fanout"),
            kind: ExchangeKind::Fanout,
            durable: self.options.rabbit_transient_quorum_queue,
            auto_delete: true,
        }
    }

    /// A topic consumer: queue named after its binding key on the control exchange.
    pub fn topic_consumer(&self, exchange: &str, routing_key: &str) -> ConsumerSpec {
        ConsumerSpec {
            exchange: Some(self.topic_exchange(exchange)),
            queue: QueueSpec {
                name: routing_key.to_owned(),
                durable: self.options.durable(),
                auto_delete: self.options.amqp_auto_delete,
                arguments: self.queue_arguments(self.options.rabbit_quorum_queue, 0),
            },
            routing_key: routing_key.to_owned(),
            consumer_arguments: self.consumer_arguments(),
        }
    }

    /// The fanout consumer with its expiring, uniquely named queue.
    pub fn fanout_consumer(&self, topic: &str, unique: &str) -> ConsumerSpec {
        let quorum = self.options.rabbit_transient_quorum_queue;
        ConsumerSpec {
            exchange: Some(self.fanout_exchange(topic)),
            queue: QueueSpec {
                name: format!("{topic}_fanout_{unique}"),
                durable: quorum,
                auto_delete: false,
                arguments: self.queue_arguments(quorum, self.options.rabbit_transient_queues_ttl),
            },
            routing_key: topic.to_owned(),
            consumer_arguments: self.consumer_arguments(),
        }
    }

    /// All consumers of an RPC server, in oslo's order: topic, topic.server, fanout.
    pub fn server_consumers(
        &self,
        exchange: &str,
        target: &Target,
        unique: &str,
    ) -> Vec<ConsumerSpec> {
        let mut consumers = vec![self.topic_consumer(exchange, &target.topic)];
        if target.server.is_some() {
            consumers.push(self.topic_consumer(exchange, &target.routing_key()));
        }
        consumers.push(self.fanout_consumer(&target.topic, unique));
        consumers
    }

    /// A caller's reply queue, reached through the default exchange by name.
    pub fn reply_consumer(&self, queue_name: &str) -> ConsumerSpec {
        let quorum = self.options.rabbit_transient_quorum_queue;
        ConsumerSpec {
            exchange: None,
            queue: QueueSpec {
                name: queue_name.to_owned(),
                durable: quorum,
                auto_delete: false,
                arguments: self.queue_arguments(quorum, self.options.rabbit_transient_queues_ttl),
            },
            routing_key: String::new(),
            consumer_arguments: self.consumer_arguments(),
        }
    }
}

fn clamp_i32(value: u64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_target() -> Target {
        Target::guest_agent("abc")
    }

    #[test]
    fn defaults_match_the_reference_table() {
        let options = RabbitOptions::default();
        let consumers = Topology::new(&options).server_consumers("trove", &guest_target(), "u1");
        let summary: Vec<_> = consumers
            .iter()
            .map(|c| {
                let ex = c.exchange.as_ref().unwrap();
                (
                    ex.name.as_str(),
                    ex.kind,
                    ex.durable,
                    ex.auto_delete,
                    c.queue.name.as_str(),
                    c.queue.durable,
                    c.queue.auto_delete,
                    c.queue.arguments.clone(),
                    c.routing_key.as_str(),
                )
            })
            .collect();
        let expires = vec![("x-expires".to_owned(), ArgValue::Int(1_800_000))];
        assert_eq!(
            summary,
            vec![
                (
                    "trove",
                    ExchangeKind::Topic,
                    false,
                    false,
                    "guestagent.abc",
                    false,
                    false,
                    vec![],
                    "guestagent.abc"
                ),
                (
                    "trove",
                    ExchangeKind::Topic,
                    false,
                    false,
                    "guestagent.abc.abc",
                    false,
                    false,
                    vec![],
                    "guestagent.abc.abc"
                ),
                (
                    "guestagent.abc_fanout",
                    ExchangeKind::Fanout,
                    false,
                    true,
                    "guestagent.abc_fanout_u1",
                    false,
                    false,
                    expires,
                    "guestagent.abc"
                ),
            ]
        );
    }

    #[test]
    fn quorum_and_durable_options_change_topic_queues_only() {
        let options = RabbitOptions {
            rabbit_quorum_queue: true,
            rabbit_quorum_delivery_limit: 5,
            ..RabbitOptions::default()
        };
        let topology = Topology::new(&options);
        let topic = topology.topic_consumer("trove", "t");
        assert!(topic.queue.durable);
        assert!(topic.exchange.as_ref().unwrap().durable);
        assert_eq!(
            topic.queue.arguments,
            vec![
                ("x-queue-type".to_owned(), ArgValue::Str("quorum".into())),
                ("x-delivery-limit".to_owned(), ArgValue::Int(5)),
            ]
        );
        let fanout = topology.fanout_consumer("t", "u");
        assert!(!fanout.queue.durable);
        assert_eq!(
            fanout.queue.arguments,
            vec![("x-expires".to_owned(), ArgValue::Int(1_800_000))]
        );
    }

    #[test]
    fn ha_and_transient_quorum_arguments_are_in_oslo_order() {
        let options = RabbitOptions {
            rabbit_ha_queues: true,
            rabbit_transient_queues_ttl: 60,
            enable_cancel_on_failover: true,
            ..RabbitOptions::default()
        };
        let reply = Topology::new(&options).reply_consumer("reply_x");
        assert_eq!(
            reply.queue.arguments,
            vec![
                ("x-ha-policy".to_owned(), ArgValue::Str("all".into())),
                ("x-expires".to_owned(), ArgValue::Int(60_000)),
            ]
        );
        assert_eq!(reply.consumer_arguments.len(), 1);
        let transient = RabbitOptions {
            rabbit_transient_quorum_queue: true,
            ..RabbitOptions::default()
        };
        let fanout = Topology::new(&transient).fanout_consumer("t", "u");
        assert!(fanout.queue.durable && fanout.exchange.unwrap().durable);
        assert_eq!(
            fanout.queue.arguments[0],
            ("x-queue-type".to_owned(), ArgValue::Str("quorum".into()))
        );
    }

    #[test]
    fn quorum_with_ha_is_refused() {
        let options = RabbitOptions {
            rabbit_quorum_queue: true,
            rabbit_ha_queues: true,
            ..RabbitOptions::default()
        };
        assert!(options.validate().is_err());
        assert!(RabbitOptions::default().validate().is_ok());
    }
}
