//! `fleet_sweep`: call one or more methods on every guest of a list, as Trove's taskmanager
//! would, and print who answered, who refused and who stayed silent (see
//! [`netiso_messaging::fleet`]).
//!
//! ```text
//! cargo run --release -p netiso-messaging --example fleet_sweep -- \
//!     [--url URL] [--exchange trove] [--concurrency 64] [--timeout-ms 30000] [--quiet] \
//!     GUESTS_FILE rpc_ping 'get_filesystem_stats={"fs_path": "/var/lib/mysql"}'
//! ```
//!
//! Each method is swept in turn, with the arguments after its `=` (a JSON object; none if
//! absent).
//!
//! `GUESTS_FILE` holds one guest a line, `GUEST_ID INSTANCE_KEY` (`-` for a guest without
//! secure RPC); it holds keys, so it must not be readable by group or others (0600). `URL` is
//! the control plane's `transport_url` (default `NETISO_TEST_AMQP_URL`, else the local
//! broker). For each method, one line per guest unless `--quiet`, then a summary line:
//!
//! ```text
//! sweep method=rpc_ping guests=N answered=A refused=R timed_out=T failed=F sweep_ms=MS p50_ms=MS p99_ms=MS
//! ```
//! The exit status is 1 when some guest did not answer. `--delete-queues` then deletes every
//! guest's topic queues (`guestagent.<id>` and `guestagent.<id>.<id>`), as Trove's taskmanager
//! does when it deletes an instance; it may be given without methods.

#![allow(clippy::print_stdout)] // a command-line tool: its output is the point

use std::error::Error;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use netiso_config::TransportUrl;
use netiso_messaging::{
    BrokerConfig, Context, FleetClient, Outcome, RabbitOptions, Sweep, SweepOptions, Target,
    Transport,
};
use serde_json::{Map, Value};

type AnyResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[path = "common/guests.rs"]
mod guests;

const USAGE: &str = "usage: fleet_sweep [--url URL] [--exchange NAME] [--concurrency N] \
                     [--timeout-ms MS] [--quiet] [--delete-queues] GUESTS_FILE \
                     METHOD[=JSON_ARGS]...";

/// The command line.
struct Cli {
    url: String,
    exchange: String,
    options: SweepOptions,
    quiet: bool,
    delete_queues: bool,
    guests_file: String,
    methods: Vec<(String, Map<String, Value>)>,
}

fn parse_cli() -> AnyResult<Cli> {
    let mut cli = Cli {
        url: std::env::var("NETISO_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        exchange: "trove".to_owned(),
        options: SweepOptions::default(),
        quiet: false,
        delete_queues: false,
        guests_file: String::new(),
        methods: Vec::new(),
    };
    let mut words = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .ok_or_else(|| format!("{word} needs a value\n{USAGE}"))
        };
        match word.as_str() {
            "--url" => cli.url = value()?,
            "--exchange" => cli.exchange = value()?,
            "--concurrency" => cli.options.concurrency = NonZeroUsize::from_str(&value()?)?,
            "--timeout-ms" => {
                cli.options.timeout = Duration::from_millis(u64::from_str(&value()?)?)
            }
            "--quiet" => cli.quiet = true,
            "--delete-queues" => cli.delete_queues = true,
            "--help" | "-h" => return Err(USAGE.into()),
            _ => positional.push(word),
        }
    }
    let mut positional = positional.into_iter();
    cli.guests_file = positional.next().ok_or(USAGE)?;
    cli.methods = positional.map(method_call).collect::<AnyResult<_>>()?;
    if cli.methods.is_empty() && !cli.delete_queues {
        return Err(USAGE.into());
    }
    Ok(cli)
}

/// `NAME` or `NAME=JSON_OBJECT`: a method and its arguments.
fn method_call(word: String) -> AnyResult<(String, Map<String, Value>)> {
    let Some((name, args)) = word.split_once('=') else {
        return Ok((word, Map::new()));
    };
    match serde_json::from_str(args)? {
        Value::Object(map) => Ok((name.to_owned(), map)),
        _ => Err(format!("the arguments of {name} must be a JSON object\n{USAGE}").into()),
    }
}

fn ms(duration: Option<Duration>) -> f64 {
    duration.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn report(method: &str, sweep: &Sweep, quiet: bool) {
    if !quiet {
        for result in &sweep.results {
            let outcome = match &result.outcome {
                Outcome::Answered(value) => format!("answered {value}"),
                Outcome::Refused { class, message } => format!("refused {class}: {message}"),
                Outcome::TimedOut => "timed out".to_owned(),
                Outcome::Failed(err) => format!("failed: {err}"),
            };
            println!(
                "{} {method} {:.2}ms {outcome}",
                result.guest_id,
                result.elapsed.as_secs_f64() * 1e3
            );
        }
    }
    println!(
        "sweep method={method} guests={} answered={} refused={} timed_out={} failed={} sweep_ms={:.1} p50_ms={:.2} p99_ms={:.2}",
        sweep.results.len(),
        sweep.count(Outcome::is_answered),
        sweep.count(|o| matches!(o, Outcome::Refused { .. })),
        sweep.count(|o| matches!(o, Outcome::TimedOut)),
        sweep.count(|o| matches!(o, Outcome::Failed(_))),
        sweep.elapsed.as_secs_f64() * 1e3,
        ms(sweep.answered_quantile(0.5)),
        ms(sweep.answered_quantile(0.99)),
    );
}

async fn run(cli: Cli) -> AnyResult<bool> {
    let guests = guests::read(&cli.guests_file)?;
    let parsed = TransportUrl::from_str(&cli.url)?;
    let mut options = RabbitOptions::default();
    options.apply_url_query(&parsed.query)?;
    let transport = Transport::connect(
        BrokerConfig::from_transport_url(&parsed)?,
        options,
        Duration::from_secs(15),
    )
    .await?;
    let fleet = FleetClient::new(&transport, &cli.exchange);
    let context = Context::fresh();
    let mut all_answered = true;
    for (method, args) in &cli.methods {
        let sweep = fleet
            .sweep(&guests, method, args, &context, &cli.options)
            .await;
        all_answered &= sweep.count(Outcome::is_answered) == guests.len();
        report(method, &sweep, cli.quiet);
    }
    fleet.close().await;
    if cli.delete_queues {
        for guest in &guests {
            let target = Target::guest_agent(&guest.id);
            for queue in [target.topic.clone(), target.routing_key()] {
                transport.delete_queue(&queue).await?;
            }
        }
    }
    transport.close();
    Ok(all_answered)
}

/// A single-threaded runtime: one caller process, its cost per call as low as it goes.
fn main() -> ExitCode {
    let outcome = parse_cli().and_then(|cli| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(cli))
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("fleet_sweep: {err}");
            ExitCode::from(2)
        }
    }
}
