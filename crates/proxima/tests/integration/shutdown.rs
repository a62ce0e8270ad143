//! Graceful shutdown of the real binary on SIGTERM, and the health endpoints.

use std::time::Duration;
use tokio::time::Instant;

use crate::harness::*;

fn slow_mock_config(grace: &str) -> std::path::PathBuf {
    temp_file(
        "graceful.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"{grace}\"\n\n\
             [providers.slow]\nkind = \"mock\"\nlatency = \"200ms\"\n\n\
             [models.slow]\ntargets = [{{ provider = \"slow\", model = \"slow-1\" }}]\n"
        ),
    )
}

/// Starts a stream of `text` from the `slow` model and reads its first chunk.
async fn start_stream(
    client: &reqwest::Client,
    served: &Served,
    text: &str,
) -> (
    Vec<u8>,
    impl futures_util::Stream<Item = reqwest::Result<impl AsRef<[u8]>>> + Unpin,
) {
    use futures_util::StreamExt;
    let response = client
        .post(served.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(stream_body("slow", text).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.bytes_stream());
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("no first chunk within 5 s")
        .unwrap()
        .unwrap();
    (first.to_vec(), body)
}

/// Reads the rest of a stream whose first bytes were `received`, within the 10 s grace period,
/// and returns the text its chunks carry; it must end with `[DONE]`.
async fn rest_of_stream<B, E>(
    mut received: Vec<u8>,
    body: &mut (impl futures_util::Stream<Item = Result<B, E>> + Unpin),
) -> String
where
    B: AsRef<[u8]>,
    E: std::fmt::Debug,
{
    use futures_util::StreamExt;
    let rest = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(piece) = body.next().await {
            received.extend_from_slice(piece.expect("stream broke during shutdown").as_ref());
        }
    })
    .await;
    assert!(
        rest.is_ok(),
        "the stream did not finish during the grace period"
    );
    let received = String::from_utf8(received).unwrap();
    assert!(received.trim_end().ends_with("data: [DONE]"), "{received}");
    let data: Vec<String> = received
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect();
    streamed_content(&chunks_until_done(&data), 0)
}

/// Whether a fresh connection gets `/health/ready` answered 200.
async fn ready(url: &str) -> Result<u16, reqwest::Error> {
    let response = http_client()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn sigterm_lets_a_stream_finish_stops_taking_traffic_and_exits_zero() {
    let config = slow_mock_config("10s");
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let mut served = Served::start(command);
    let client = http_client();

    let live = Answer::read(client.get(served.url("/health/live"))).await;
    assert_eq!(live.status, 200);
    assert_eq!(ready(&served.url("/health/ready")).await.unwrap(), 200);

    let text = "one two three four five six seven eight nine ten";
    let (received, mut body) = start_stream(&client, &served, text).await;
    let first_at = Instant::now();

    let signalled = Instant::now();
    served.terminate();

    // Soon after the signal, no new traffic: readiness fails or the listener is gone.
    let ready_url = served.url("/health/ready");
    let mut refused = false;
    while signalled.elapsed() < Duration::from_secs(2) {
        match ready(&ready_url).await {
            Ok(200) => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(503) | Err(_) => {
                refused = true;
                break;
            }
            Ok(other) => panic!("/health/ready answered {other} while shutting down"),
        }
    }
    assert!(refused, "still ready 2 s after SIGTERM");
    // After its first chunk the stream needs 11 more x 200 ms: it was still running.
    assert!(
        first_at.elapsed() < Duration::from_millis(2200),
        "readiness was only refused {:?} after the stream began",
        first_at.elapsed()
    );

    // The stream in flight completes.
    assert_eq!(rest_of_stream(received, &mut body).await, text);

    let status = served
        .wait_exit(Duration::from_secs(5))
        .expect("proxima did not exit after its last stream ended");
    assert!(status.success(), "exit status {status:?}");
    let logs = served.stop();
    assert!(logs.contains("shutting down"), "{logs}");
    let _ = std::fs::remove_file(&config);
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_promptly() {
    let config = slow_mock_config("30s");
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let mut served = Served::start(command);
    let answer = Answer::read(
        http_client()
            .post(served.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body("slow", "hi").to_string()),
    )
    .await;
    assert_eq!(answer.status, 200);
    let signalled = Instant::now();
    served.terminate();
    let status = served
        .wait_exit(Duration::from_secs(5))
        .expect("did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "an idle gateway should not wait out its grace period"
    );
    let _ = std::fs::remove_file(&config);
}

#[tokio::test]
async fn a_stream_longer_than_the_grace_period_is_cut_and_the_process_still_exits() {
    let config = slow_mock_config("500ms");
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let served = Served::start(command);
    let mut body = Box::pin(
        http_client()
            .post(served.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(stream_body("slow", &"word ".repeat(40)).to_string())
            .send()
            .await
            .unwrap()
            .bytes_stream(),
    );
    use futures_util::StreamExt;
    let _ = body.next().await;
    let signalled = Instant::now();
    served.terminate();
    let (status, served) = served.exit_within(Duration::from_secs(5)).await;
    let status = status.expect("did not exit after the grace period");
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited only after {:?}",
        signalled.elapsed()
    );
    drop(served);
    let _ = std::fs::remove_file(&config);
}

/// Names of the child's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc");
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    names.sort();
    names
}

/// How many times the child's thread named `name` has slept and been woken.
fn wakeups(pid: u32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc") {
        let path = task.expect("task").path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == name) {
            let status = std::fs::read_to_string(path.join("status")).expect("status");
            return status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok())
                .expect("voluntary_ctxt_switches");
        }
    }
    panic!("no thread named {name}")
}

#[tokio::test]
async fn three_workers_share_the_connections_and_each_drains_its_streams_on_sigterm() {
    let dir = temp_path("workers-db");
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", dir.join("ledger.db").display());
    let config = temp_file(
        "workers.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n\n\
             [storage]\ndatabase = \"{database}\"\n\n\
             [providers.slow]\nkind = \"mock\"\nlatency = \"100ms\"\n\n\
             [models.slow]\ntargets = [{{ provider = \"slow\", model = \"slow-1\" }}]\n"
        ),
    );
    let mut command = proxima();
    command
        .env("TOKIO_WORKER_THREADS", "3")
        .args(["serve", "--config"])
        .arg(&config);
    let served = Served::start(command);
    // The workers start just after the address is logged.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut threads = thread_names(served.child.id());
    while !threads.iter().any(|n| n == "worker-2") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        threads = thread_names(served.child.id());
    }
    let workers: Vec<&String> = threads
        .iter()
        .filter(|n| n.starts_with("worker-"))
        .collect();
    assert_eq!(workers, ["worker-1", "worker-2"], "threads: {threads:?}");

    // Six streams, each on a connection of its own, all open at once: worker 0 hands every
    // connection past its share to another worker.
    let text = "one two three four five six seven eight nine ten";
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(start_stream(&http_client(), &served, text).await);
    }
    // Each worker serves two of them: a chunk every 100 ms wakes it.
    let pid = served.child.id();
    let before = [wakeups(pid, "worker-1"), wakeups(pid, "worker-2")];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = [wakeups(pid, "worker-1"), wakeups(pid, "worker-2")];
    assert!(
        before
            .iter()
            .zip(after)
            .all(|(before, after)| after >= before + 4),
        "workers 1 and 2 woke {before:?} -> {after:?} times in 500 ms: they serve no stream"
    );
    served.terminate();

    for (received, mut body) in streams {
        assert_eq!(rest_of_stream(received, &mut body).await, text);
    }
    let (status, served) = served.exit_within(Duration::from_secs(5)).await;
    let logs = served.stop();
    assert!(status.expect("did not exit").success(), "stderr:\n{logs}");
    // Each stream's usage record, whichever worker served it.
    let store = proxima::store::Store::connect(&database).await.unwrap();
    assert_eq!(store.count_usage().await.unwrap(), 6, "stderr:\n{logs}");
    store.close().await;
    let _ = std::fs::remove_file(&config);
}
