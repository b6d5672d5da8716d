//! Topology on the broker: the exchanges, queues and bindings of a [`ConsumerSpec`] declared
//! with their flags and arguments, and the one-off declarations and deletions tools and tests
//! make on a scratch channel. Names are checked against AMQP's short-string limit first.

use amqprs::channel::{
    Channel, ExchangeDeclareArguments, ExchangeDeleteArguments, QueueBindArguments,
    QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::{FieldTable, FieldValue};
use tokio::time::Instant;

use super::Transport;
use super::channel::{CloseReason, close_quietly, is_not_found, open_plain_channel, refused_or};
use super::lock;
use crate::error::TransportError;
use crate::topology::{ArgValue, ConsumerSpec, ExchangeSpec};

/// AMQP short strings (names, routing keys) are at most 255 bytes; amqprs panics beyond.
const SHORT_STR_MAX: usize = 255;

/// Refuses a name or routing key longer than an AMQP short string, naming `what` it is.
pub(super) fn check_short(value: &str, what: &str) -> Result<(), TransportError> {
    if value.len() > SHORT_STR_MAX {
        return Err(TransportError::Config(format!(
            "{what} is {} bytes long, AMQP allows at most {SHORT_STR_MAX}",
            value.len()
        )));
    }
    Ok(())
}

/// The `x-...` arguments of a queue or consumer as an AMQP field table.
pub(super) fn field_table(arguments: &[(String, ArgValue)]) -> Result<FieldTable, TransportError> {
    let mut table = FieldTable::new();
    for (name, value) in arguments {
        let key = name
            .as_str()
            .try_into()
            .map_err(|_| TransportError::Config(format!("argument name {name:?} too long")))?;
        let value = match value {
            ArgValue::Int(i) => FieldValue::I(*i),
            ArgValue::Bool(b) => FieldValue::t(*b),
            ArgValue::Str(s) => FieldValue::S(
                s.as_str()
                    .try_into()
                    .map_err(|_| TransportError::Config(format!("argument {name:?} too long")))?,
            ),
        };
        table.insert(key, value);
    }
    Ok(table)
}

/// Declares an exchange with the given flags.
pub(super) async fn declare_exchange(
    channel: &Channel,
    reason: &CloseReason,
    spec: &ExchangeSpec,
) -> Result<(), TransportError> {
    check_short(&spec.name, "exchange name")?;
    let args = ExchangeDeclareArguments::new(&spec.name, spec.kind.as_str())
        .durable(spec.durable)
        .auto_delete(spec.auto_delete)
        .finish();
    channel
        .exchange_declare(args)
        .await
        .map_err(|err| refused_or(reason, format!("exchange.declare {}", spec.name), err))
}

/// Declares a consumer's exchange, queue and binding.
pub(super) async fn declare_consumer(
    channel: &Channel,
    reason: &CloseReason,
    spec: &ConsumerSpec,
) -> Result<(), TransportError> {
    check_short(&spec.queue.name, "queue name")?;
    check_short(&spec.routing_key, "routing key")?;
    if let Some(exchange) = &spec.exchange {
        declare_exchange(channel, reason, exchange).await?;
    }
    let args = QueueDeclareArguments::new(&spec.queue.name)
        .durable(spec.queue.durable)
        .auto_delete(spec.queue.auto_delete)
        .exclusive(false)
        .arguments(field_table(&spec.queue.arguments)?)
        .finish();
    channel
        .queue_declare(args)
        .await
        .map_err(|err| refused_or(reason, format!("queue.declare {}", spec.queue.name), err))?;
    if let Some(exchange) = &spec.exchange {
        let bind =
            QueueBindArguments::new(&spec.queue.name, &exchange.name, &spec.routing_key).finish();
        channel.queue_bind(bind).await.map_err(|err| {
            refused_or(
                reason,
                format!("queue.bind {} to {}", spec.queue.name, exchange.name),
                err,
            )
        })?;
    }
    Ok(())
}

impl Transport {
    /// Declares consumers' exchanges, queues and bindings without consuming (tests, tools).
    pub async fn declare(&self, specs: &[ConsumerSpec]) -> Result<(), TransportError> {
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        for spec in specs {
            declare_consumer(&channel, &reason, spec).await?;
        }
        close_quietly(channel).await;
        Ok(())
    }

    /// Whether a queue exists (a passive declaration; the broker answers 404 when it does not).
    pub async fn queue_exists(&self, name: &str) -> Result<bool, TransportError> {
        check_short(name, "queue name")?;
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        let args = QueueDeclareArguments::new(name).passive(true).finish();
        match channel.queue_declare(args).await {
            Ok(_) => {
                close_quietly(channel).await;
                Ok(true)
            }
            Err(err) => match lock(&reason).clone() {
                Some(reason) if is_not_found(&reason) => Ok(false),
                _ => Err(refused_or(
                    &reason,
                    format!("passive queue.declare {name}"),
                    err,
                )),
            },
        }
    }

    /// Deletes a queue (cleanup of test or fanout queues).
    pub async fn delete_queue(&self, name: &str) -> Result<(), TransportError> {
        check_short(name, "queue name")?;
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        channel
            .queue_delete(QueueDeleteArguments::new(name).finish())
            .await
            .map_err(|err| refused_or(&reason, format!("queue.delete {name}"), err))?;
        close_quietly(channel).await;
        Ok(())
    }

    /// Deletes an exchange (cleanup).
    pub async fn delete_exchange(&self, name: &str) -> Result<(), TransportError> {
        check_short(name, "exchange name")?;
        let deadline = Instant::now() + self.shared.options.publish_timeout;
        let (channel, reason) = self.scratch_channel(deadline).await?;
        channel
            .exchange_delete(ExchangeDeleteArguments::new(name).finish())
            .await
            .map_err(|err| refused_or(&reason, format!("exchange.delete {name}"), err))?;
        close_quietly(channel).await;
        Ok(())
    }

    /// A short-lived channel on the current connection, for one-off operations.
    async fn scratch_channel(
        &self,
        deadline: Instant,
    ) -> Result<(Channel, CloseReason), TransportError> {
        let link = self.link(deadline, 0).await?;
        open_plain_channel(&link.connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_stop_at_255_bytes_and_name_what_is_too_long() {
        assert!(check_short(&"q".repeat(SHORT_STR_MAX), "queue name").is_ok());
        assert!(check_short("", "queue name").is_ok());
        let err = check_short(&"é".repeat(128), "routing key").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid transport configuration: routing key is 256 bytes long, AMQP allows at most 255"
        );
    }

    #[test]
    fn arguments_map_to_amqp_field_types() {
        let table = field_table(&[
            ("x-expires".into(), ArgValue::Int(1_800_000)),
            ("x-cancel-on-ha-failover".into(), ArgValue::Bool(true)),
            ("x-queue-type".into(), ArgValue::Str("quorum".into())),
        ])
        .expect("short names and values");
        let value = |name: &str| table.get(&name.try_into().expect("short name")).cloned();
        assert_eq!(value("x-expires"), Some(FieldValue::I(1_800_000)));
        assert_eq!(value("x-cancel-on-ha-failover"), Some(FieldValue::t(true)));
        assert_eq!(
            value("x-queue-type"),
            Some(FieldValue::S("quorum".try_into().expect("short")))
        );
        assert_eq!(table.as_ref().len(), 3);
    }

    #[test]
    fn over_long_argument_names_are_refused() {
        let name = "x".repeat(256);
        let err = field_table(&[(name, ArgValue::Int(1))]).unwrap_err();
        assert!(matches!(err, TransportError::Config(text) if text.contains("too long")));
    }
}
