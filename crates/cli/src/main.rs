//! `rayservice`: run RayService YAML locally with real Ray, with commands shaped like kubectl's.

mod output;

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use rayservice_api::{Manifest, RayCluster, RayService};
use rayservice_local::client::{Client, ClientError};
use rayservice_local::settings::Settings;
use rayservice_local::wire::ApplyRequest;
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "rayservice",
    version,
    about = "Run Ray Serve applications from RayService YAML: locally with real Ray, or as a Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or update RayServices from a file (like `kubectl apply -f`).
    Apply {
        /// The YAML file (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Return only when every RayService is Ready (or fail with the reason).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 10m).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Say what `apply -f FILE` would do (nothing, an in-place update, an upgrade, or a change
    /// that is not rolled out), without doing it.
    Diff {
        /// The YAML file (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// List objects: rayservice, raycluster, pods, services.
    Get {
        /// What to list.
        resource: String,
        /// One object only.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<OutputFormat>,
        /// Label selector for pods, e.g. `ray.io/is-ray-node=yes`.
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
    },
    /// Show one object in detail, with its recent events.
    Describe {
        /// rayservice or raycluster.
        resource: String,
        /// Its name.
        name: String,
    },
    /// Print a pod's (a Ray node's) output, as `kubectl logs` does.
    Logs {
        /// The pod name, as `rayservice get pods` lists it.
        pod: String,
        /// Keep printing what the node writes, until interrupted.
        #[arg(short = 'f', long = "follow")]
        follow: bool,
        /// Only the last N lines.
        #[arg(long = "tail")]
        tail: Option<usize>,
    },
    /// Delete RayServices (from a file, or by name); everything they started stops.
    Delete {
        /// rayservice, when deleting by name.
        resource: Option<String>,
        /// The RayService name.
        name: Option<String>,
        /// The YAML file the RayServices came from.
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
    },
    /// Wait for a condition, e.g. `--for=condition=Ready rayservice/NAME`.
    Wait {
        /// `rayservice/NAME`.
        target: String,
        /// `condition=Ready` (or `condition=UpgradeInProgress=false`, `delete`).
        #[arg(long = "for")]
        condition: String,
        /// How long to wait.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Run the local control plane in the foreground.
    Server,
    /// Stop every local RayService and the control plane.
    Down,
    /// Install the pinned Ray (or check RAYSERVICE_PYTHON) now, showing progress.
    InstallRay,
    /// Print the RayService and RayCluster CustomResourceDefinitions (ray.io, v1 and v1alpha1).
    Crd,
    /// Run the Kubernetes operator against the cluster of KUBECONFIG (or in-cluster config): its
    /// controllers run while this replica holds the leader lease; /metrics, /healthz and /readyz
    /// are served on --probe-addr.
    Operator(OperatorArgs),
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8082")]
    probe_addr: SocketAddr,
    /// Run the controllers only while holding the leader Lease, so that one replica is active
    /// (`--leader-elect=false` to run them at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Namespace of the leader Lease [default: the pod's namespace, else `default`].
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "rayservice-operator")]
    leader_election_id: String,
    /// Log lines as text or as JSON objects (filter: RAYSERVICE_LOG, default `info`).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}`; use ms, s, m or h"
            ));
        }
    };
    // A year is more than any wait needs; beyond it, deadlines would overflow the clock.
    const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(format!(
            "`{text}` is too long a duration; at most a year (8760h)"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("RAYSERVICE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                if matches!(cli.command, Command::Server | Command::Operator(_)) {
                    "info"
                } else {
                    "warn"
                },
            )
        });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Operator(OperatorArgs {
            log_format: LogFormat::Json,
            ..
        }) => logs.json().init(),
        _ => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let settings = Settings::from_env().map_err(|e| anyhow!(e))?;
    match cli.command {
        Command::Server => server(settings).await,
        Command::InstallRay => install_ray(&settings).map(|_| ()),
        Command::Operator(args) => operator(args).await,
        Command::Crd => {
            print!("{}", rayservice_api::crd::crds_yaml());
            Ok(())
        }
        Command::Apply {
            file,
            wait,
            timeout,
        } => apply(&settings, &file, wait, timeout).await,
        Command::Diff { file } => diff(&settings, &file).await,
        Command::Get {
            resource,
            name,
            output,
            selector,
        } => {
            get(
                &settings,
                &resource,
                name.as_deref(),
                output,
                selector.as_deref(),
            )
            .await
        }
        Command::Describe { resource, name } => describe(&settings, &resource, &name).await,
        Command::Logs { pod, follow, tail } => logs(&settings, &pod, follow, tail).await,
        Command::Delete {
            resource,
            name,
            file,
        } => {
            delete(
                &settings,
                resource.as_deref(),
                name.as_deref(),
                file.as_deref(),
            )
            .await
        }
        Command::Wait {
            target,
            condition,
            timeout,
        } => wait_command(&settings, &target, &condition, timeout).await,
        Command::Down => down(&settings).await,
    }
}

async fn server(settings: Settings) -> Result<()> {
    let failure_file = std::env::var_os("RAYSERVICE_SERVER_FAILURE_FILE").map(PathBuf::from);
    let result = rayservice_local::server::run(settings).await;
    if let (Err(error), Some(path)) = (&result, failure_file) {
        let _ = std::fs::write(path, error.to_string());
    }
    result.map_err(|e| anyhow!(e))
}

/// The operator ([`rayservice_k8s::runtime`]), stopped cleanly by SIGTERM or Ctrl-C.
async fn operator(args: OperatorArgs) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "interrupt",
        }
    };
    let options = rayservice_k8s::runtime::OperatorOptions {
        probe_addr: args.probe_addr,
        leader_elect: args.leader_elect,
        leader_election_namespace: args.leader_election_namespace,
        leader_election_id: args.leader_election_id,
    };
    rayservice_k8s::runtime::run_operator(options, shutdown)
        .await
        .map_err(|e| anyhow!(e))
}

fn install_ray(settings: &Settings) -> Result<rayservice_ray::install::RayRuntime> {
    let spinner = progress_spinner("finding Ray");
    let result = rayservice_local::ray_runtime(settings, &mut |message: &str| {
        spinner.set_message(message.to_string())
    });
    spinner.finish_and_clear();
    let runtime = result.map_err(|e| anyhow!(e))?;
    eprintln!(
        "Ray {} ready: {}",
        runtime.version,
        runtime.python.display()
    );
    Ok(runtime)
}

fn progress_spinner(message: &str) -> indicatif::ProgressBar {
    let spinner = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

async fn connect(settings: &Settings) -> Result<Client> {
    let exe = std::env::current_exe().context("cannot find the rayservice program itself")?;
    Client::connect_or_start(settings, &exe)
        .await
        .map_err(|e| anyhow!(e))
}

/// The RayServices of a file, with warnings for what local mode does not run.
/// The ray.io objects of a manifest file (or `-`), and the folder relative paths start from.
struct Objects {
    services: Vec<RayService>,
    clusters: Vec<RayCluster>,
    base_dir: PathBuf,
}

impl Objects {
    /// `(kind, name)` of every object, as `delete -f` removes them.
    fn names(&self) -> Vec<(&'static str, String)> {
        let services = self
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .map(|n| ("rayservice", n));
        let clusters = self
            .clusters
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .map(|n| ("raycluster", n));
        services.chain(clusters).collect()
    }

    fn request(&self, file: &str) -> Result<ApplyRequest> {
        Ok(ApplyRequest {
            objects: self
                .services
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?,
            clusters: self
                .clusters
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?,
            base_dir: self.base_dir.clone(),
            file: file.to_string(),
        })
    }
}

fn read_manifests(file: &str) -> Result<Objects> {
    let (text, base_dir) = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        (text, std::env::current_dir().context("current directory")?)
    } else {
        let path = Path::new(file);
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
        let absolute =
            std::fs::canonicalize(path).with_context(|| format!("cannot resolve {file}"))?;
        (
            text,
            absolute.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let manifests = rayservice_api::parse_manifests(&text, file).map_err(|e| anyhow!(e))?;
    let mut services = Vec::new();
    let mut clusters = Vec::new();
    for manifest in manifests {
        match manifest {
            Manifest::RayService(service) => services.push(*service),
            Manifest::RayCluster(cluster) => clusters.push(*cluster),
            Manifest::Other { kind, name, .. } => {
                eprintln!(
                    "warning: {file}: {kind}/{name} skipped: not a ray.io object, local mode does not run it"
                )
            }
        }
    }
    if services.is_empty() && clusters.is_empty() {
        bail!(
            "{file}: no RayService or RayCluster in the file; fix: add a document with `apiVersion: ray.io/v1` and `kind: RayService` (or `RayCluster`)"
        );
    }
    Ok(Objects {
        services,
        clusters,
        base_dir,
    })
}

async fn apply(settings: &Settings, file: &str, wait: bool, timeout: Duration) -> Result<()> {
    let objects = read_manifests(file)?;
    install_ray(settings)?;
    let client = connect(settings).await?;
    let results = client
        .apply(&objects.request(file)?)
        .await
        .map_err(|e| anyhow!(e))?;
    for result in &results {
        println!(
            "{}.ray.io/{} {}",
            result.kind.to_ascii_lowercase(),
            result.name,
            result.outcome
        );
    }
    if wait {
        for result in results.iter().filter(|r| r.kind == "RayService") {
            wait_ready(&client, &result.name, timeout).await?;
        }
    }
    Ok(())
}

async fn diff(settings: &Settings, file: &str) -> Result<()> {
    let objects = read_manifests(file)?;
    let client = connect(settings).await?;
    let reports = client
        .diff(&objects.request(file)?)
        .await
        .map_err(|e| anyhow!(e))?;
    for report in reports {
        println!(
            "{}.ray.io/{}: {}",
            report.kind.to_ascii_lowercase(),
            report.name,
            report.kinds.join(", ")
        );
        for line in report.lines {
            println!("  {line}");
        }
    }
    Ok(())
}

/// What a status says about waiting: done, still going (with what), or failed (with why).
enum Progress {
    Done,
    Waiting(String),
    Failed(String),
}

fn readiness(object: &Value) -> Progress {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    let status = &object["status"];
    if status["observedGeneration"].as_i64().unwrap_or(-1) < generation {
        return Progress::Waiting("waiting for the control plane to pick up the change".into());
    }
    let condition = |type_: &str| {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let ready = condition("Ready");
    let upgrading = condition("UpgradeInProgress")["status"] == "True";
    let reason = ready["reason"].as_str().unwrap_or_default();
    let message = ready["message"].as_str().unwrap_or_default().to_string();
    if matches!(reason, "ValidationFailed" | "ServeConfigRejected") {
        return Progress::Failed(message);
    }
    let target = if status["pendingServiceStatus"]["rayClusterName"].is_string() {
        &status["pendingServiceStatus"]
    } else {
        &status["activeServiceStatus"]
    };
    if let Some(apps) = target["applicationStatuses"].as_object() {
        let failed: Vec<String> = apps
            .iter()
            .filter(|(_, app)| app["status"] == "DEPLOY_FAILED")
            .map(|(name, app)| {
                format!(
                    "application {name} is DEPLOY_FAILED: {}",
                    app["message"].as_str().unwrap_or_default()
                )
            })
            .collect();
        if !failed.is_empty() {
            return Progress::Failed(failed.join("\n"));
        }
    }
    if ready["status"] == "True" && !upgrading {
        Progress::Done
    } else if upgrading {
        Progress::Waiting(format!(
            "upgrade in progress: {}",
            condition("UpgradeInProgress")["message"]
                .as_str()
                .unwrap_or_default()
        ))
    } else {
        Progress::Waiting(if message.is_empty() {
            "starting".into()
        } else {
            message
        })
    }
}

async fn wait_ready(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let spinner = progress_spinner(&format!("{name}: waiting"));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let object = client.rayservice(name).await.map_err(|e| anyhow!(e))?;
        match readiness(&object) {
            Progress::Done => {
                spinner.finish_and_clear();
                eprintln!("rayservice.ray.io/{name} is Ready");
                return Ok(());
            }
            Progress::Failed(why) => {
                spinner.finish_and_clear();
                bail!("rayservice.ray.io/{name} is not ready: {why}");
            }
            Progress::Waiting(why) => {
                if why != last {
                    spinner.set_message(format!("{name}: {why}"));
                    if !std::io::stderr().is_terminal() {
                        eprintln!("{name}: {why}");
                    }
                    last = why;
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            spinner.finish_and_clear();
            bail!(
                "timed out after {}s waiting for rayservice.ray.io/{name}: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_command(
    settings: &Settings,
    target: &str,
    condition: &str,
    timeout: Duration,
) -> Result<()> {
    let name = target
        .strip_prefix("rayservice/")
        .or_else(|| target.strip_prefix("rayservices/"))
        .or_else(|| target.strip_prefix("rayservice.ray.io/"))
        .ok_or_else(|| anyhow!("`{target}`: name the object as rayservice/NAME"))?;
    let client = connect(settings).await?;
    match condition.to_ascii_lowercase().as_str() {
        "condition=ready" | "condition=ready=true" => wait_ready(&client, name, timeout).await,
        "delete" => {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match client.rayservice(name).await {
                    Err(ClientError::NotFound(_)) => return Ok(()),
                    Err(e) => return Err(anyhow!(e)),
                    Ok(_) if tokio::time::Instant::now() > deadline => {
                        bail!("timed out waiting for rayservice/{name} to be deleted")
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        other => bail!("--for={other} is not supported; use --for=condition=Ready or --for=delete"),
    }
}

fn resource_kind(resource: &str) -> Result<&'static str> {
    Ok(match resource.to_ascii_lowercase().as_str() {
        "rayservice" | "rayservices" | "rayservice.ray.io" | "rayservices.ray.io" => "rayservice",
        "raycluster" | "rayclusters" | "raycluster.ray.io" | "rayclusters.ray.io" => "raycluster",
        "pod" | "pods" | "po" => "pods",
        "service" | "services" | "svc" => "services",
        other => {
            bail!("unknown resource type `{other}`; use rayservice, raycluster, pods or services")
        }
    })
}

async fn get(
    settings: &Settings,
    resource: &str,
    name: Option<&str>,
    output: Option<OutputFormat>,
    selector: Option<&str>,
) -> Result<()> {
    let kind = resource_kind(resource)?;
    let client = connect(settings).await?;
    let now = Timestamp::now();
    let wide = output == Some(OutputFormat::Wide);
    let mut items: Vec<Value> = match kind {
        "rayservice" => client.rayservices().await.map_err(|e| anyhow!(e))?,
        "raycluster" => client.rayclusters().await.map_err(|e| anyhow!(e))?,
        "pods" => client
            .pods()
            .await
            .map_err(|e| anyhow!(e))?
            .into_iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect(),
        _ => client
            .services()
            .await
            .map_err(|e| anyhow!(e))?
            .into_iter()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .collect(),
    };
    let item_name = |item: &Value| {
        item["metadata"]["name"]
            .as_str()
            .or_else(|| item["name"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    if let Some(name) = name {
        items.retain(|item| item_name(item) == name);
        if items.is_empty() {
            bail!("{kind} \"{name}\" not found");
        }
    }
    if let Some(selector) = selector {
        let wanted: Vec<(String, String)> = selector
            .split(',')
            .filter_map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        items.retain(|item| {
            let labels = if item["labels"].is_object() {
                &item["labels"]
            } else {
                &item["metadata"]["labels"]
            };
            wanted
                .iter()
                .all(|(k, v)| labels[k].as_str() == Some(v.as_str()))
        });
    }
    match output {
        Some(OutputFormat::Json) | Some(OutputFormat::Yaml) => {
            let document = match (name, items.len()) {
                (Some(_), 1) => items.remove(0),
                _ => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
            };
            if output == Some(OutputFormat::Json) {
                println!("{}", serde_json::to_string_pretty(&document)?);
            } else {
                print!(
                    "{}",
                    serde_saphyr::to_string(&document).map_err(|e| anyhow!("{e}"))?
                );
            }
            return Ok(());
        }
        Some(OutputFormat::Name) => {
            let prefix = match kind {
                "rayservice" => "rayservice.ray.io/",
                "raycluster" => "raycluster.ray.io/",
                "pods" => "pod/",
                _ => "service/",
            };
            for item in &items {
                println!("{prefix}{}", item_name(item));
            }
            return Ok(());
        }
        _ => {}
    }
    if items.is_empty() {
        eprintln!("No resources found in default namespace.");
        return Ok(());
    }
    let text = match kind {
        "rayservice" => output::rayservice_table(&typed::<RayService>(items)?, wide, now),
        "raycluster" => output::raycluster_table(&typed::<RayCluster>(items)?, wide, now),
        "pods" => output::pods_table(&typed(items)?, wide, now),
        _ => output::services_table(&typed(items)?, now),
    };
    print!("{text}");
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(items: Vec<Value>) -> Result<Vec<T>> {
    items
        .into_iter()
        .map(|item| {
            serde_json::from_value(item)
                .map_err(|e| anyhow!("unexpected answer from the server: {e}"))
        })
        .collect()
}

/// `kubectl logs POD [-f] [--tail N]` for a local node: its log file, from the last `tail`
/// lines (or the start), followed while `follow` until Ctrl-C.
async fn logs(settings: &Settings, pod: &str, follow: bool, tail: Option<usize>) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let client = connect(settings).await?;
    let pods = client.pods().await.map_err(|e| anyhow!(e))?;
    let Some(view) = pods.into_iter().find(|p| p.name == pod) else {
        bail!("pods \"{pod}\" not found; fix: `rayservice get pods` lists them");
    };
    let path = PathBuf::from(&view.log_path);
    let mut file = std::fs::File::open(&path)
        .with_context(|| format!("pod {pod} has no output yet ({})", path.display()))?;
    let start = match tail {
        None => 0,
        Some(lines) => tail_offset(&mut file, lines)
            .with_context(|| format!("cannot read {}", path.display()))?,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out)?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                std::io::copy(&mut file, &mut out)?;
                out.flush()?;
            }
        }
    }
}

/// Where the last `lines` lines of a file start.
fn tail_offset(file: &mut std::fs::File, lines: usize) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut seen = 0usize;
    let mut buffer = vec![0u8; 8192];
    // A final newline ends the last line; it does not start another.
    let mut skip_last_newline = true;
    while pos > 0 {
        let step = pos.min(buffer.len() as u64);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let chunk = &mut buffer[..step as usize];
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            if *byte != b'\n' {
                skip_last_newline = false;
                continue;
            }
            if skip_last_newline {
                skip_last_newline = false;
                continue;
            }
            seen += 1;
            if seen == lines {
                return Ok(pos + i as u64 + 1);
            }
        }
    }
    Ok(0)
}

async fn describe(settings: &Settings, resource: &str, name: &str) -> Result<()> {
    let kind = resource_kind(resource)?;
    let client = connect(settings).await?;
    let now = Timestamp::now();
    match kind {
        "rayservice" => {
            let object = client.rayservice(name).await.map_err(|e| anyhow!(e))?;
            let service: RayService = serde_json::from_value(object)?;
            let events = client.events(name).await.map_err(|e| anyhow!(e))?;
            print!("{}", output::describe_rayservice(&service, &events, now));
        }
        "raycluster" => {
            let cluster = client
                .rayclusters()
                .await
                .map_err(|e| anyhow!(e))?
                .into_iter()
                .find(|c| c["metadata"]["name"] == name)
                .ok_or_else(|| anyhow!("rayclusters.ray.io \"{name}\" not found"))?;
            let cluster: RayCluster = serde_json::from_value(cluster)?;
            let events = client.events(name).await.map_err(|e| anyhow!(e))?;
            print!("{}", output::describe_raycluster(&cluster, &events, now));
        }
        other => bail!("describe {other} is not supported; use rayservice or raycluster"),
    }
    Ok(())
}

async fn delete(
    settings: &Settings,
    resource: Option<&str>,
    name: Option<&str>,
    file: Option<&str>,
) -> Result<()> {
    let names: Vec<(&'static str, String)> = match (file, resource, name) {
        (Some(file), None, None) => read_manifests(file)?.names(),
        (None, Some(resource), Some(name)) => deletable(resource_kind(resource)?, name)?,
        (None, Some(resource), None) if resource.contains('/') => {
            let (kind, name) = resource.split_once('/').unwrap_or_default();
            deletable(resource_kind(kind)?, name)?
        }
        _ => bail!(
            "use `rayservice delete -f FILE`, `rayservice delete rayservice NAME` or `rayservice delete raycluster NAME`"
        ),
    };
    let client = match Client::connect(settings).await {
        Some(client) => client,
        // Nothing runs: start the server only to be sure of what it knows.
        None => connect(settings).await?,
    };
    delete_names(&client, &names).await
}

fn deletable(kind: &'static str, name: &str) -> Result<Vec<(&'static str, String)>> {
    if kind != "rayservice" && kind != "raycluster" {
        bail!("only RayServices and RayClusters can be deleted");
    }
    Ok(vec![(kind, name.to_string())])
}

async fn delete_names(client: &Client, names: &[(&'static str, String)]) -> Result<()> {
    let mut missing = Vec::new();
    for (kind, name) in names {
        let deleted = if *kind == "raycluster" {
            client.delete_raycluster(name).await
        } else {
            client.delete_rayservice(name).await
        };
        match deleted {
            Ok(()) => println!("{kind}.ray.io \"{name}\" deleted"),
            Err(ClientError::NotFound(message)) => missing.push(message),
            Err(e) => return Err(anyhow!(e)),
        }
    }
    if !missing.is_empty() {
        bail!("{}", missing.join("\n"));
    }
    Ok(())
}

async fn down(settings: &Settings) -> Result<()> {
    let Some(client) = Client::connect(settings).await else {
        eprintln!("no rayservice server runs for {}", settings.home.display());
        return Ok(());
    };
    client.shutdown(true).await.map_err(|e| anyhow!(e))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while Client::connect(settings).await.is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "stopped every RayService and the server of {}",
        settings.home.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn tail_finds_the_last_lines() {
        use std::io::Write;
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"one\ntwo\nthree\n").expect("write");
        assert_eq!(super::tail_offset(&mut file, 1).expect("tail"), 8);
        assert_eq!(super::tail_offset(&mut file, 2).expect("tail"), 4);
        assert_eq!(super::tail_offset(&mut file, 5).expect("tail"), 0);
        assert_eq!(super::tail_offset(&mut file, 0).expect("tail"), 14);
        let mut open_end = tempfile::tempfile().expect("temp file");
        open_end.write_all(b"a\nb").expect("write");
        assert_eq!(super::tail_offset(&mut open_end, 1).expect("tail"), 2);
    }
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("2777777777777777h").is_err());
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(365 * 24 * 3600))
        );
    }

    #[test]
    fn helm_chart_crds_are_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/helm/rayservice-operator/crds/ray.io_crds.yaml");
        let chart = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            chart == rayservice_api::crd::crds_yaml(),
            "{} is stale: run `cargo run -p rayservice -- crd > {}`",
            path.display(),
            "deploy/helm/rayservice-operator/crds/ray.io_crds.yaml"
        );
    }
}
