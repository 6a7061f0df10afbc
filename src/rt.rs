//! Small runtime helpers every server in sojourn shares — the exporter's,
//! each proxied service's, the probes' connections — kept below them all.

use std::time::Duration;

use tokio::net::TcpListener;

/// Stops a background task when its owner ends (or is dropped by a timeout).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next connection, or None once `shutdown` has completed.
pub async fn accept_until<F: std::future::Future<Output = ()>>(
    listener: &TcpListener,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = &mut *shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as
/// Go's runtime does for node_exporter: sojourn holds a sock_diag socket
/// in each pod's network namespace for each of its readers (the queue
/// sampler, tcp_ports, the accept program's listeners), so a node with
/// 256 pods needs ~800 descriptors, past the 1 024 soft limit systemd
/// gives a service by default once the servers' connections are added.
/// Returns the limit now in force; the hard limit, which only privilege
/// raises, is left alone.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(limit.current.unwrap_or(u64::MAX));
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok(limit.maximum.unwrap_or(u64::MAX))
}
