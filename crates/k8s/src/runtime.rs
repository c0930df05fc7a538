//! The operator process: probes at once, the controllers once this replica leads, and a clean
//! hand-over of the lease on shutdown. The binary only parses flags and installs logging.

use std::future::Future;
use std::net::SocketAddr;

use thiserror::Error;

use crate::operate::{self, LeaderElector, Metrics, OperateError};

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub probe_addr: SocketAddr,
    /// Run the controllers only while holding the leader Lease.
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    pub leader_election_id: String,
}

/// Why the operator stopped other than by a shutdown signal.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// No API server could be reached.
    #[error("cannot reach a Kubernetes API server (set KUBECONFIG, or run in a pod): {0}")]
    Connect(#[source] kube::Error),
    /// The probe address cannot be bound.
    #[error("cannot listen on --probe-addr {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Leader election failed or leadership was lost.
    #[error("leader election: {0}")]
    Leadership(#[source] OperateError),
    /// The probe server stopped.
    #[error("the probe server stopped: {0}")]
    Probes(String),
    /// The controllers stopped (they run until the process ends).
    #[error("the controllers stopped")]
    ControllersStopped,
}

/// Runs the operator until `shutdown` completes (then `Ok`, the lease released) or something
/// fails (then the error, so that Kubernetes restarts the pod). `shutdown` yields the name of
/// what asked for it (`SIGTERM`, ...), for the log.
pub async fn run_operator(
    options: OperatorOptions,
    shutdown: impl Future<Output = &'static str>,
) -> Result<(), RuntimeError> {
    tokio::pin!(shutdown);
    let client = kube::Client::try_default()
        .await
        .map_err(RuntimeError::Connect)?;
    let metrics = Metrics::new();
    let (ready, ready_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind(options.probe_addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            addr: options.probe_addr,
            source,
        })?;
    tracing::info!(addr = %options.probe_addr, "serving /metrics, /healthz and /readyz");
    let mut probes = tokio::spawn(operate::serve_probes(listener, metrics.clone(), ready_rx));

    let elector = options.leader_elect.then(|| {
        let namespace = options
            .leader_election_namespace
            .clone()
            .or_else(operate::in_cluster_namespace)
            .unwrap_or_else(|| "default".to_string());
        LeaderElector::new(
            client.clone(),
            namespace,
            &options.leader_election_id,
            operate::default_identity(),
        )
    });
    if let Some(elector) = &elector {
        tracing::info!(lease = %elector.lease(), identity = %elector.identity(), "waiting for leadership");
        tokio::select! {
            acquired = elector.acquire() => acquired.map_err(RuntimeError::Leadership)?,
            signal = &mut shutdown => {
                tracing::info!(signal, "stopping before leading");
                probes.abort();
                return Ok(());
            }
        }
    }
    metrics.set_leader(true);
    ready.send_replace(true);

    // The controllers of the operator, all run here.
    let controllers = async {
        tokio::join!(
            crate::raycluster::run(client.clone(), metrics.clone()),
            async {
                if let Err(error) = crate::rayservice::run(client.clone(), metrics.clone()).await {
                    tracing::error!(%error, "the RayService controller could not start");
                }
            },
        )
    };
    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = controllers => Err(RuntimeError::ControllersStopped),
        error = lost => Err(RuntimeError::Leadership(error)),
        served = &mut probes => Err(RuntimeError::Probes(match served {
            Ok(Err(error)) => error.to_string(),
            Ok(Ok(())) => "it returned".to_string(),
            Err(error) => error.to_string(),
        })),
        signal = &mut shutdown => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
    };
    ready.send_replace(false);
    metrics.set_leader(false);
    if let (Ok(()), Some(elector)) = (&outcome, &elector)
        && let Err(error) = elector.release().await
    {
        tracing::warn!(%error, "could not release the lease; a successor waits for it to expire");
    }
    probes.abort();
    outcome
}
