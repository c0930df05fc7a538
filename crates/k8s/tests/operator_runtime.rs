//! The operator's runtime: leader election on a Lease of a real kube-apiserver (from
//! `scripts/k8s-control-plane.sh`), and the probe server (`/healthz`, `/readyz`, `/metrics`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use rayservice_k8s::operate::{LeaderElector, Metrics, OPENMETRICS_CONTENT_TYPE, OperateError};
use tokio::time::timeout;

mod common;

use common::{AbortOnDrop, ControlPlane, eventually};

const NS: &str = "default";

async fn admin_client(cp: &ControlPlane) -> anyhow::Result<Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig)?,
        &Default::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

async fn holder(leases: &Api<Lease>, name: &str) -> anyhow::Result<Option<String>> {
    Ok(leases
        .get(name)
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_on_a_real_lease() -> anyhow::Result<()> {
    let cp = ControlPlane::start()?;
    let client = admin_client(&cp).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);

    // 1. Two candidates race for a free Lease: exactly one wins. The lease is long (30 s), so
    //    the loser can only get it through a release, never through expiry, within this test.
    let name = "race";
    leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec::default()),
            },
        )
        .await?;
    let long = |identity: &str| {
        Arc::new(
            LeaderElector::new(client.clone(), NS, name, identity)
                .with_timing(Duration::from_secs(30), Duration::from_secs(1)),
        )
    };
    let (a, b) = (long("candidate-a"), long("candidate-b"));
    let window = Duration::from_secs(5);
    let (won_a, won_b) = tokio::join!(timeout(window, a.acquire()), timeout(window, b.acquire()));
    let (winner, loser) = match (won_a, won_b) {
        (Ok(r), Err(_)) => (r.map(|_| a)?, b),
        (Err(_), Ok(r)) => (r.map(|_| b)?, a),
        (Ok(_), Ok(_)) => bail!("both candidates acquired the lease"),
        (Err(_), Err(_)) => bail!("no candidate acquired the free lease within {window:?}"),
    };
    assert_eq!(
        holder(&leases, name).await?.as_deref(),
        Some(winner.identity())
    );

    // 2. The winner releases: the loser, still waiting, takes over without waiting for expiry.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiting = Arc::clone(&loser);
    let _loser_task = AbortOnDrop(tokio::spawn(async move {
        let _ = tx.send(waiting.acquire().await);
    }));
    winner.release().await?;
    timeout(Duration::from_secs(15), rx)
        .await
        .context("the waiting candidate did not take the released lease")??
        .context("acquire")?;
    let lease = leases.get(name).await?;
    let spec = lease.spec.context("lease spec")?;
    assert_eq!(spec.holder_identity.as_deref(), Some(loser.identity()));
    assert_eq!(spec.lease_transitions, Some(2));
    // Releasing a lease one no longer holds changes nothing.
    winner.release().await?;
    assert_eq!(
        holder(&leases, name).await?.as_deref(),
        Some(loser.identity())
    );
    loser.release().await?;
    assert_eq!(holder(&leases, name).await?, None);

    // 3. A holder that stops renewing loses a short (2 s) lease to the other candidate, and
    //    its `hold` then says who took it.
    let name = "expiry";
    let short = |identity: &str| {
        LeaderElector::new(client.clone(), NS, name, identity)
            .with_timing(Duration::from_secs(2), Duration::from_millis(250))
    };
    let (stale, successor) = (short("stale"), short("successor"));
    stale.acquire().await?;
    assert_eq!(holder(&leases, name).await?.as_deref(), Some("stale"));
    timeout(Duration::from_secs(20), successor.acquire())
        .await
        .context("the successor did not take the expired lease")??;
    assert_eq!(holder(&leases, name).await?.as_deref(), Some("successor"));
    match timeout(Duration::from_secs(10), stale.hold()).await? {
        OperateError::LeaseTaken { holder, .. } => assert_eq!(holder, "successor"),
        other => bail!("expected LeaseTaken, got {other}"),
    }
    // The successor keeps it while it renews.
    let successor = Arc::new(successor);
    let renewing = Arc::clone(&successor);
    let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel();
    let _renewing = AbortOnDrop(tokio::spawn(async move {
        let _ = lost_tx.send(renewing.hold().await);
    }));
    let challenger = short("challenger");
    ensure!(
        timeout(Duration::from_secs(5), challenger.acquire())
            .await
            .is_err(),
        "a challenger took a lease that is being renewed"
    );
    ensure!(lost_rx.try_recv().is_err(), "the renewing holder lost it");

    // 4. When renewing keeps failing (here: the Lease is gone), `hold` gives up.
    leases.delete(name, &DeleteParams::default()).await?;
    match timeout(Duration::from_secs(10), lost_rx).await?? {
        OperateError::RenewFailed { .. } => {}
        other => bail!("expected RenewFailed, got {other}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_serve_health_readiness_and_metrics() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let metrics = Metrics::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let server_metrics = metrics.clone();
    let _server = AbortOnDrop(tokio::spawn(async move {
        if let Err(error) =
            rayservice_k8s::operate::serve_probes(listener, server_metrics, ready_rx).await
        {
            eprintln!("probe server: {error}");
        }
    }));
    let http = reqwest::Client::builder().no_proxy().build()?;
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move { Ok::<_, anyhow::Error>(request.send().await?) }
    };

    let health = get("/healthz").await?;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await?, "ok");
    assert_eq!(get("/readyz").await?.status(), 503);

    ready_tx.send(true)?;
    eventually("readyz 200", Duration::from_secs(10), || async {
        Ok((get("/readyz").await?.status() == 200).then_some(()))
    })
    .await?;

    metrics.reconciled("raycluster", true, 0.01);
    metrics.set_leader(true);
    let response = get("/metrics").await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str())
            .transpose()?,
        Some(OPENMETRICS_CONTENT_TYPE)
    );
    let text = response.text().await?;
    assert!(
        text.contains(
            r#"rayservice_operator_reconciles_total{controller="raycluster",result="ok"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("rayservice_operator_leader 1"), "{text}");

    ready_tx.send(false)?;
    eventually("readyz 503 again", Duration::from_secs(10), || async {
        Ok((get("/readyz").await?.status() == 503).then_some(()))
    })
    .await?;
    Ok(())
}
