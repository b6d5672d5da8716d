//! The `[oslo_messaging_rabbit]` options that change what is declared or how the transport
//! behaves, with oslo.messaging 18.3.1's defaults. Plain data: the configuration crate fills it.

use std::time::Duration;

/// `[oslo_messaging_rabbit]` options relevant to declarations, publishing and reconnection.
#[derive(Debug, Clone, PartialEq)]
pub struct RabbitOptions {
    /// `amqp_durable_queues`: durable topic exchange and topic queues.
    pub amqp_durable_queues: bool,
    /// `amqp_auto_delete`: auto-delete topic exchange and topic queues.
    pub amqp_auto_delete: bool,
    /// `rabbit_quorum_queue`: topic queues become quorum (and durable) queues.
    pub rabbit_quorum_queue: bool,
    /// `rabbit_transient_quorum_queue`: reply and fanout queues become quorum and durable.
    pub rabbit_transient_quorum_queue: bool,
    /// `rabbit_quorum_delivery_limit` (0: unset).
    pub rabbit_quorum_delivery_limit: u32,
    /// `rabbit_quorum_max_memory_length` (0: unset).
    pub rabbit_quorum_max_memory_length: u32,
    /// `rabbit_quorum_max_memory_bytes` (0: unset).
    pub rabbit_quorum_max_memory_bytes: u32,
    /// `rabbit_ha_queues`: `x-ha-policy: all` on every queue.
    pub rabbit_ha_queues: bool,
    /// `rabbit_transient_queues_ttl` in seconds: `x-expires` of reply and fanout queues.
    pub rabbit_transient_queues_ttl: u32,
    /// `enable_cancel_on_failover`: consumer argument `x-cancel-on-ha-failover`.
    pub enable_cancel_on_failover: bool,
    /// `direct_mandatory_flag`: replies are published with `mandatory`.
    pub direct_mandatory_flag: bool,
    /// `kombu_missing_consumer_retry_timeout`: how long a reply is retried while its queue is
    /// missing.
    pub kombu_missing_consumer_retry_timeout: Duration,
    /// `heartbeat_timeout_threshold` in seconds, negotiated as the AMQP heartbeat (0: off).
    pub heartbeat_timeout_threshold: u16,
    /// `rabbit_qos_prefetch_count` (0: no `basic.qos`).
    pub rabbit_qos_prefetch_count: u16,
    /// `rabbit_retry_interval`: first reconnection delay.
    pub rabbit_retry_interval: Duration,
    /// `rabbit_interval_max`: cap of the exponential reconnection delay.
    pub rabbit_interval_max: Duration,
    /// How long a publish may wait for a connection and its broker confirm, retries included.
    pub publish_timeout: Duration,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        Self {
            amqp_durable_queues: false,
            amqp_auto_delete: false,
            rabbit_quorum_queue: false,
            rabbit_transient_quorum_queue: false,
            rabbit_quorum_delivery_limit: 0,
            rabbit_quorum_max_memory_length: 0,
            rabbit_quorum_max_memory_bytes: 0,
            rabbit_ha_queues: false,
            rabbit_transient_queues_ttl: 1800,
            enable_cancel_on_failover: false,
            direct_mandatory_flag: true,
            kombu_missing_consumer_retry_timeout: Duration::from_secs(60),
            heartbeat_timeout_threshold: 60,
            rabbit_qos_prefetch_count: 0,
            rabbit_retry_interval: Duration::from_secs(1),
            rabbit_interval_max: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(60),
        }
    }
}

impl RabbitOptions {
    /// Durability of the topic exchange and topic queues (quorum queues are always durable).
    pub fn durable(&self) -> bool {
        self.amqp_durable_queues || self.rabbit_quorum_queue
    }

    /// Refuses combinations oslo refuses, before anything is declared.
    pub fn validate(&self) -> Result<(), String> {
        if self.rabbit_ha_queues && (self.rabbit_quorum_queue || self.rabbit_transient_quorum_queue)
        {
            return Err(
                "rabbit_quorum_queue and rabbit_ha_queues both enabled: a queue is quorum or HA \
                 (mirrored), not both"
                    .into(),
            );
        }
        if self.rabbit_retry_interval.is_zero() {
            return Err("rabbit_retry_interval must be positive".into());
        }
        Ok(())
    }
}
