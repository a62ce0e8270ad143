//! The `mock-upstream` binary: the default OpenAI- and Gemini-like behaviour on a fixed port, for
//! the benchmark and SDK end-to-end tests.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mock_upstream::{MockUpstream, Options};

const USAGE: &str =
    "usage: mock-upstream [--listen 127.0.0.1:9100] [--latency 0ms] [--event-gap 0ms]
                     [--record | --no-record]

  --listen ADDR     address to bind (default 127.0.0.1:9100; port 0 picks a free one)
  --latency DUR     wait before every reply, e.g. 0ms, 20ms, 1.5s, 500us (default 0ms)
  --event-gap DUR   wait between the events of a streamed reply, as a model writes tokens
                    (default 0ms: all at once)
  --record          keep every request in memory (off by default so memory stays flat)
  --no-record       the default";

struct Args {
    listen: SocketAddr,
    options: Options,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-upstream: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockUpstream::start_on(args.listen, args.options).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock-upstream: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // Scripts wait for this line to learn the port, so it must not sit in a buffer.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", mock.url());
    let _ = stdout.flush();
    shutdown_signal().await;
    mock.shutdown();
    ExitCode::SUCCESS
}

/// `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        options: Options {
            latency: Duration::ZERO,
            event_gap: Duration::ZERO,
            record: false,
        },
    };
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let text = value()?;
                parsed.listen = text
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {text}"))?;
            }
            "--latency" => parsed.options.latency = parse_duration(&value()?)?,
            "--event-gap" => parsed.options.event_gap = parse_duration(&value()?)?,
            "--record" => parsed.options.record = true,
            "--no-record" => parsed.options.record = false,
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown argument: {flag}")),
        }
    }
    Ok(Some(parsed))
}

/// Parses `250ms`, `1.5s`, `500us`, `2m`; a bare number is milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("not a duration: {text}");
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_millis(7)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn args() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| s.to_string()));
        let Ok(Some(parsed)) = args(&[
            "--listen",
            "0.0.0.0:1234",
            "--latency=5ms",
            "--event-gap",
            "2ms",
            "--record",
        ]) else {
            panic!("should parse");
        };
        assert_eq!(parsed.listen, SocketAddr::from(([0, 0, 0, 0], 1234)));
        assert_eq!(parsed.options.latency, Duration::from_millis(5));
        assert_eq!(parsed.options.event_gap, Duration::from_millis(2));
        assert!(parsed.options.record);
        assert!(matches!(args(&["--help"]), Ok(None)));
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--listen"]).is_err());
    }
}
