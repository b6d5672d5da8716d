//! The `[oslo_messaging_rabbit]` options that change what is declared or how the transport
//! behaves, with oslo.messaging 18.3.1's defaults. Plain data: the configuration crate fills it.

use std::path::PathBuf;
use std::time::Duration;

use netiso_config::{RabbitTlsOptions, SslVersion};

use crate::error::OptionsError;

/// `[oslo_messaging_rabbit]` options relevant to declarations, publishing and reconnection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// `ssl` and the `ssl_*` options: TLS to the broker.
    pub tls: RabbitTlsOptions,
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
            tls: RabbitTlsOptions::default(),
        }
    }
}

impl RabbitOptions {
    /// Applies `transport_url` query parameters, which override `[oslo_messaging_rabbit]`
    /// options of the same name. Returns the names it does not know (oslo ignores them too).
    pub fn apply_url_query(
        &mut self,
        query: &[(String, String)],
    ) -> Result<Vec<String>, OptionsError> {
        let mut ignored = Vec::new();
        for (name, value) in query {
            let flag = || parse_bool(name, value);
            let path = || Some(PathBuf::from(value)).filter(|_| !value.is_empty());
            let number = || {
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| OptionsError::NotAWholeNumber {
                        option: name.clone(),
                        value: value.clone(),
                    })
            };
            let small_number = || {
                u16::try_from(number()?).map_err(|_| OptionsError::TooLarge {
                    option: name.clone(),
                    value: value.clone(),
                })
            };
            let seconds = || {
                value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| OptionsError::NotSeconds {
                        option: name.clone(),
                        value: value.clone(),
                    })
            };
            match name.as_str() {
                "amqp_durable_queues" => self.amqp_durable_queues = flag()?,
                "amqp_auto_delete" => self.amqp_auto_delete = flag()?,
                "rabbit_quorum_queue" => self.rabbit_quorum_queue = flag()?,
                "rabbit_transient_quorum_queue" => self.rabbit_transient_quorum_queue = flag()?,
                "rabbit_quorum_delivery_limit" => self.rabbit_quorum_delivery_limit = number()?,
                "rabbit_quorum_max_memory_length" => {
                    self.rabbit_quorum_max_memory_length = number()?
                }
                "rabbit_quorum_max_memory_bytes" => self.rabbit_quorum_max_memory_bytes = number()?,
                "rabbit_ha_queues" => self.rabbit_ha_queues = flag()?,
                "rabbit_transient_queues_ttl" => self.rabbit_transient_queues_ttl = number()?,
                "enable_cancel_on_failover" => self.enable_cancel_on_failover = flag()?,
                "direct_mandatory_flag" => self.direct_mandatory_flag = flag()?,
                "kombu_missing_consumer_retry_timeout" => {
                    self.kombu_missing_consumer_retry_timeout = seconds()?;
                }
                "heartbeat_timeout_threshold" => self.heartbeat_timeout_threshold = small_number()?,
                "rabbit_qos_prefetch_count" => self.rabbit_qos_prefetch_count = small_number()?,
                "rabbit_retry_interval" => self.rabbit_retry_interval = seconds()?,
                "rabbit_interval_max" => self.rabbit_interval_max = seconds()?,
                "ssl" => self.tls.ssl = flag()?,
                "ssl_version" => {
                    self.tls.ssl_version =
                        SslVersion::parse(value).map_err(|source| OptionsError::BadValue {
                            option: name.clone(),
                            source,
                        })?;
                }
                "ssl_ca_file" => self.tls.ssl_ca_file = path(),
                "ssl_cert_file" => self.tls.ssl_cert_file = path(),
                "ssl_key_file" => self.tls.ssl_key_file = path(),
                _ => ignored.push(name.clone()),
            }
        }
        Ok(ignored)
    }

    /// Durability of the topic exchange and topic queues (quorum queues are always durable).
    pub fn durable(&self) -> bool {
        self.amqp_durable_queues || self.rabbit_quorum_queue
    }

    /// Refuses combinations oslo refuses, before anything is declared.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.rabbit_ha_queues {
            let quorum_option = if self.rabbit_quorum_queue {
                Some("rabbit_quorum_queue")
            } else if self.rabbit_transient_quorum_queue {
                Some("rabbit_transient_quorum_queue")
            } else {
                None
            };
            if let Some(quorum_option) = quorum_option {
                return Err(OptionsError::QuorumWithHa { quorum_option });
            }
        }
        if self.rabbit_retry_interval.is_zero() {
            return Err(OptionsError::RetryIntervalNotPositive);
        }
        Ok(())
    }
}

/// oslo.config's boolean spellings.
fn parse_bool(name: &str, value: &str) -> Result<bool, OptionsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(OptionsError::NotABoolean {
            option: name.to_owned(),
            value: value.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn url_query_overrides_options() {
        let mut options = RabbitOptions::default();
        let ignored = options
            .apply_url_query(&query(&[
                ("rabbit_quorum_queue", "True"),
                ("rabbit_transient_queues_ttl", "60"),
                ("kombu_missing_consumer_retry_timeout", "2.5"),
                ("ssl", "1"),
                ("ssl_ca_file", "/etc/trove/ca.pem"),
                ("ssl_version", "TLSv1_2"),
                ("kombu_reconnect_splay", "0.5"),
            ]))
            .unwrap();
        assert!(options.rabbit_quorum_queue && options.durable());
        assert_eq!(options.rabbit_transient_queues_ttl, 60);
        assert_eq!(
            options.kombu_missing_consumer_retry_timeout,
            Duration::from_millis(2500)
        );
        assert!(options.tls.ssl);
        assert_eq!(
            options.tls.ssl_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/trove/ca.pem"))
        );
        assert_eq!(options.tls.ssl_version, SslVersion::Tls12);
        assert_eq!(ignored, vec!["kombu_reconnect_splay".to_owned()]);
    }

    #[test]
    fn bad_query_values_name_the_option() {
        let mut options = RabbitOptions::default();
        let err = options
            .apply_url_query(&query(&[("amqp_durable_queues", "maybe")]))
            .unwrap_err();
        assert_eq!(
            err,
            OptionsError::NotABoolean {
                option: "amqp_durable_queues".into(),
                value: "maybe".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "transport_url option amqp_durable_queues=\"maybe\" is not a boolean"
        );
        let err = options
            .apply_url_query(&query(&[("heartbeat_timeout_threshold", "70000")]))
            .unwrap_err();
        assert!(matches!(err, OptionsError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("too large"), "{err}");
        let err = options
            .apply_url_query(&query(&[("rabbit_qos_prefetch_count", "-1")]))
            .unwrap_err();
        assert!(matches!(err, OptionsError::NotAWholeNumber { .. }), "{err}");
        let err = options
            .apply_url_query(&query(&[("rabbit_retry_interval", "-2")]))
            .unwrap_err();
        assert!(
            matches!(&err, OptionsError::NotSeconds { option, .. } if option == "rabbit_retry_interval"),
            "{err}"
        );
        let err = options
            .apply_url_query(&query(&[("ssl_version", "TLSv1_1")]))
            .unwrap_err();
        assert!(matches!(err, OptionsError::BadValue { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("ssl_version") && text.contains("TLSv1_1"),
            "{text}"
        );
    }

    #[test]
    fn validation_names_the_conflicting_options() {
        let mut options = RabbitOptions {
            rabbit_ha_queues: true,
            rabbit_transient_quorum_queue: true,
            ..RabbitOptions::default()
        };
        let err = options.validate().unwrap_err();
        assert_eq!(
            err,
            OptionsError::QuorumWithHa {
                quorum_option: "rabbit_transient_quorum_queue"
            }
        );
        assert!(
            err.to_string()
                .starts_with("rabbit_transient_quorum_queue and rabbit_ha_queues both enabled"),
            "{err}"
        );
        options.rabbit_quorum_queue = true;
        assert_eq!(
            options.validate(),
            Err(OptionsError::QuorumWithHa {
                quorum_option: "rabbit_quorum_queue"
            })
        );
        options.rabbit_ha_queues = false;
        assert_eq!(options.validate(), Ok(()));
        options.rabbit_retry_interval = Duration::ZERO;
        let err = options.validate().unwrap_err();
        assert_eq!(err, OptionsError::RetryIntervalNotPositive);
        assert!(err.to_string().contains("rabbit_retry_interval"), "{err}");
    }
}
