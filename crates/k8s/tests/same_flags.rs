//! Local mode and the operator pass Ray the same `ray start` flags for the same YAML, apart
//! from the documented local-only ones (`rayservice_ray::node::is_local_only_param`): for every
//! KubeRay sample beside the repository or transcribed under `tests/`, every example and every
//! test fixture, for the head and each worker group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayservice_api::{Manifest, NodeType, RayClusterSpec, parse_manifests};
use rayservice_k8s::build::ray_start_args;
use rayservice_ray::install::RayRuntime;
use rayservice_ray::node::{HeadPorts, NodeKind, NodeLaunch, NodePorts, is_local_only_param};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn clusters(path: &Path) -> Vec<(String, RayClusterSpec)> {
    let text = std::fs::read_to_string(path).expect("readable");
    let manifests =
        parse_manifests(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    manifests
        .into_iter()
        .filter_map(|m| match m {
            Manifest::RayService(rs) => rs
                .spec
                .ray_cluster_config
                .clone()
                .map(|spec| (rs.metadata.name.clone().unwrap_or_default(), spec)),
            Manifest::RayCluster(rc) => Some((
                rc.metadata.name.clone().unwrap_or_default(),
                rc.spec.clone(),
            )),
            Manifest::Other { .. } => None,
        })
        .collect()
}

/// `--key=value` / `--key` arguments as a map; everything local-only left out.
fn shared_flags(args: &[String]) -> BTreeMap<String, Option<String>> {
    args.iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.to_string(), None),
        })
        .filter(|(k, _)| !is_local_only_param(k))
        .collect()
}

fn ports() -> NodePorts {
    NodePorts {
        node_manager: 20007,
        object_manager: 20008,
        dashboard_agent_listen: 20003,
        dashboard_agent_grpc: 20004,
        runtime_env_agent: 20005,
        metrics_export: 20006,
        min_worker: 20100,
        max_worker: 20199,
    }
}

fn local_args(
    node: NodeType,
    params: &BTreeMap<String, String>,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Vec<String> {
    let kind = match node {
        NodeType::Head => NodeKind::Head(HeadPorts {
            gcs: 20000,
            dashboard: 20001,
            client_server: 20002,
            autoscaler_metrics: 20010,
            dashboard_metrics: 20011,
        }),
        NodeType::Worker => NodeKind::Worker {
            head_gcs_address: "127.0.0.1:20000".into(),
        },
    };
    let runtime = RayRuntime {
        python: "/opt/ray/bin/python".into(),
        ray: "/opt/ray/bin/ray".into(),
        version: "2.60.0".into(),
    };
    let launch = NodeLaunch::for_group(
        kind,
        &runtime,
        "/tmp/rs-same/h".into(),
        ports(),
        params,
        template,
    )
    .expect("local node");
    let command = launch.command().expect("local command");
    command
        .start_args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn local_and_operator_pass_ray_the_same_flags() {
    let mut files = yaml_files(&repo().join("../shared/kuberay-samples"));
    files.extend(yaml_files(&repo().join("examples")));
    files.extend(yaml_files(&repo().join("crates/cli/tests/fixtures")));
    files.extend(yaml_files(&repo().join("tests/kuberay-v1.7.0")));
    let mut compared = 0;
    for file in &files {
        for (name, spec) in clusters(file) {
            let mut groups = vec![(
                NodeType::Head,
                &spec.head_group_spec.ray_start_params,
                &spec.head_group_spec.template,
            )];
            for group in &spec.worker_group_specs {
                groups.push((NodeType::Worker, &group.ray_start_params, &group.template));
            }
            for (node, params, template) in groups {
                let container = &template.spec.as_ref().expect("pod spec").containers[0];
                let operator = ray_start_args(node, &name, "default", params, container)
                    .expect("operator args");
                let local = local_args(node, params, template);
                assert_eq!(operator[0], "start");
                assert_eq!(local[0], "start");
                assert_eq!(
                    operator.contains(&"--head".to_string()),
                    local.contains(&"--head".to_string())
                );
                assert_eq!(
                    shared_flags(&operator),
                    shared_flags(&local),
                    "{}: {name} {node:?}\noperator: {operator:?}\nlocal:    {local:?}",
                    file.display()
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 10, "only {compared} node groups compared");
}
