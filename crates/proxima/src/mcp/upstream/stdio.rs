//! MCP servers run as local commands (`[mcp.servers.NAME] command`): JSON-RPC messages, one a
//! line, over the child's stdin and stdout, as the protocol's stdio transport has it.
//!
//! The command starts when its tools are first needed and is initialized once; if it exits, the
//! next request starts it again. It is killed when the gateway that started it is dropped (at
//! shutdown, or once a reload's new gateway has taken over and the old one's requests ended).
//! Its environment is only `PATH`, `HOME` and its configured `env`: the gateway's own keys stay
//! out of it. What it writes to stderr goes to the gateway's log at debug level.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{oneshot, Mutex};

use super::{agreed_version, initialize_params, Sent};
use crate::config::McpServerConfig;
use crate::mcp::protocol::{self, Message, RpcError};

/// Requests waiting for their answers, by id.
type Pending = Arc<StdMutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>>;

/// Environment variables passed on from the gateway's own.
const INHERITED: [&str; 2] = ["PATH", "HOME"];

pub struct Command {
    server: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    running: Mutex<Option<Arc<Running>>>,
}

/// A started, initialized command.
struct Running {
    stdin: Mutex<ChildStdin>,
    pending: Pending,
    /// Set when its stdout ends: the next request starts it again.
    exited: Arc<AtomicBool>,
    /// Killed when dropped.
    _child: Child,
}

impl Command {
    pub fn new(server: &str, program: &str, config: &McpServerConfig) -> Command {
        Command {
            server: server.to_owned(),
            program: program.to_owned(),
            args: config.args.clone(),
            env: config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            running: Mutex::new(None),
        }
    }

    /// Sends request `method`, starting the command first if it is not running; its result.
    pub(super) async fn request(
        &self,
        ids: &AtomicU64,
        method: &str,
        params: Value,
    ) -> Result<Value, Sent> {
        let running = self.running(ids).await?;
        running
            .call(ids.fetch_add(1, Ordering::Relaxed), method, params)
            .await
    }

    /// The running command, started and initialized first when there is none.
    async fn running(&self, ids: &AtomicU64) -> Result<Arc<Running>, Sent> {
        let mut current = self.running.lock().await;
        if let Some(running) = current.as_ref() {
            if !running.exited.load(Ordering::Relaxed) {
                return Ok(running.clone());
            }
            tracing::warn!(server = %self.server, "the MCP server's command exited: starting it again");
        }
        let running = Arc::new(self.start()?);
        let result = running
            .call(
                ids.fetch_add(1, Ordering::Relaxed),
                "initialize",
                initialize_params(),
            )
            .await?;
        agreed_version(&result)?;
        running
            .write(&protocol::notification("notifications/initialized"))
            .await?;
        *current = Some(running.clone());
        Ok(running)
    }

    fn start(&self) -> Result<Running, Sent> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(
                INHERITED
                    .iter()
                    .filter_map(|name| Some((name, std::env::var_os(name)?))),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| Sent::Unreachable(format!("cannot start `{}`: {e}", self.program)))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Sent::Unreachable("its stdio could not be opened".into()));
        };
        let pending = Pending::default();
        let exited = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_answers(
            self.server.clone(),
            BufReader::new(stdout),
            pending.clone(),
            exited.clone(),
        ));
        let server = self.server.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(server = %server, "MCP server says: {line}");
            }
        });
        Ok(Running {
            stdin: Mutex::new(stdin),
            pending,
            exited,
            _child: child,
        })
    }
}

impl Running {
    async fn call(&self, id: u64, method: &str, params: Value) -> Result<Value, Sent> {
        let (answer, answered) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, answer);
        let _waiting = Waiting {
            pending: &self.pending,
            id,
        };
        self.write(&protocol::request(id, method, params)).await?;
        let outcome = answered
            .await
            .map_err(|_| Sent::Unreachable("its command exited before answering".into()))?;
        outcome.map_err(Sent::Refused)
    }

    async fn write(&self, message: &Value) -> Result<(), Sent> {
        let mut line = serde_json::to_vec(message).unwrap_or_default();
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        stdin
            .write_all(&line)
            .await
            .and(stdin.flush().await)
            .map_err(|e| Sent::Unreachable(format!("cannot write to its command: {e}")))
    }
}

/// A request waiting for its answer; when it stops waiting (answered, failed, or dropped at a
/// timeout), it is forgotten.
struct Waiting<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Hands each answer on stdout to the request waiting for it, until the command exits; then
/// every request still waiting fails.
async fn read_answers(
    server: String,
    stdout: BufReader<tokio::process::ChildStdout>,
    pending: Pending,
    exited: Arc<AtomicBool>,
) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            tracing::debug!(server = %server, "MCP server wrote a line that is not JSON");
            continue;
        };
        // Its notifications and requests are not relayed: the gateway asks nothing of callers.
        if let Ok(Message::Response { id, outcome }) = protocol::parse(value) {
            let waiting = id.as_u64().and_then(|id| {
                pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id)
            });
            if let Some(waiting) = waiting {
                let _ = waiting.send(outcome);
            }
        }
    }
    exited.store(true, Ordering::Relaxed);
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}
