use super::*;
use k8s_openapi::api::core::v1::{PodCondition, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rayservice_api::{HeadGroupSpec, ScaleStrategy};

fn container(name: &str, cpu: Option<&str>, mem: Option<&str>) -> Container {
    let mut limits = BTreeMap::new();
    if let Some(c) = cpu {
        limits.insert("cpu".to_string(), Quantity(c.to_string()));
    }
    if let Some(m) = mem {
        limits.insert("memory".to_string(), Quantity(m.to_string()));
    }
    Container {
        name: name.to_string(),
        image: Some("rayproject/ray:2.52.0".to_string()),
        resources: Some(ResourceRequirements {
            limits: Some(limits),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn template(c: Container, labels: Option<BTreeMap<String, String>>) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels,
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![c],
            ..Default::default()
        }),
    }
}

fn group(name: &str, replicas: i32) -> WorkerGroupSpec {
    WorkerGroupSpec {
        group_name: name.to_string(),
        replicas: Some(replicas),
        min_replicas: Some(0),
        max_replicas: Some(10),
        template: template(container("ray-worker", Some("1"), Some("2Gi")), None),
        ..Default::default()
    }
}

fn cluster() -> RayCluster {
    let mut rc = RayCluster::new(
        "rc",
        RayClusterSpec {
            head_group_spec: HeadGroupSpec {
                template: template(
                    container("ray-head", Some("2"), Some("5Gi")),
                    Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
                ),
                ..Default::default()
            },
            worker_group_specs: vec![group("small", 1)],
            ..Default::default()
        },
    );
    rc.metadata.namespace = Some("ns".to_string());
    rc.metadata.uid = Some("uid-1".to_string());
    rc
}

fn args_of(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let c = &pod.spec.as_ref().unwrap().containers[0];
    (c.command.clone().unwrap(), c.args.clone().unwrap())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn names() {
    assert_eq!(head_service_name("rc"), "rc-head-svc");
    assert_eq!(
        head_address("rc", "ns"),
        "rc-head-svc.ns.svc.cluster.local:6379"
    );
    assert_eq!(head_pod_name("rc", "abcde"), "rc-head-abcde");
    assert_eq!(worker_pod_name("rc", "g", "abcde"), "rc-worker-g-abcde");
}

#[test]
fn head_pod_shape() {
    let pod = head_pod(&cluster(), "xyz12").unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("rc-head-xyz12"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["ray.io/cluster"], "rc");
    assert_eq!(labels["ray.io/node-type"], "head");
    assert_eq!(labels["ray.io/group"], "headgroup");
    assert_eq!(labels["ray.io/identifier"], "rc-head");
    assert_eq!(labels["ray.io/is-ray-node"], "yes");
    assert_eq!(labels["team"], "a");
    let owner = &pod.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(owner.kind, "RayCluster");
    assert_eq!(owner.api_version, "ray.io/v1");
    assert_eq!(owner.name, "rc");
    assert_eq!(owner.uid, "uid-1");
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    let (cmd, args) = args_of(&pod);
    assert_eq!(cmd, s(&["ray"]));
    assert_eq!(
        args,
        s(&[
            "start",
            "--head",
            "--block",
            "--dashboard-agent-listen-port=52365",
            "--dashboard-host=0.0.0.0",
            "--memory=5368709120",
            "--metrics-export-port=8080",
            "--num-cpus=2",
        ])
    );
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let env: Vec<(String, Option<String>)> = c
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        env,
        vec![
            (
                "RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS".to_string(),
                Some("5".to_string())
            ),
            ("RAY_SERVE_KV_TIMEOUT_S".to_string(), Some("5".to_string())),
        ]
    );
    let ports: Vec<(Option<String>, i32)> = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.container_port))
        .collect();
    let want: Vec<(Option<String>, i32)> = HEAD_PORTS
        .iter()
        .map(|(n, p)| (Some(n.to_string()), *p))
        .collect();
    assert_eq!(ports, want);
}

#[test]
fn worker_pod_shape_and_params() {
    let mut rc = cluster();
    rc.spec.worker_group_specs[0].ray_start_params = BTreeMap::from([
        ("num-gpus".to_string(), "1".to_string()),
        ("disable-usage-stats".to_string(), "true".to_string()),
        ("include-dashboard".to_string(), "false".to_string()),
        (
            "resources".to_string(),
            "'{\"x\": 1}'; rm -rf /".to_string(),
        ),
    ]);
    let pod = worker_pod(&rc, "small", "q2w4e").unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("rc-worker-small-q2w4e"));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["ray.io/node-type"], "worker");
    assert_eq!(labels["ray.io/group"], "small");
    assert_eq!(labels["ray.io/identifier"], "rc-worker");
    assert_eq!(labels["ray.io/is-ray-node"], "yes");
    let (cmd, args) = args_of(&pod);
    assert_eq!(cmd, s(&["ray"]));
    assert_eq!(
        args,
        s(&[
            "start",
            "--address=rc-head-svc.ns.svc.cluster.local:6379",
            "--block",
            "--dashboard-agent-listen-port=52365",
            "--disable-usage-stats",
            // A boolean word option keeps its value, as in KubeRay v1.7.
            "--include-dashboard=false",
            "--memory=2147483648",
            "--metrics-export-port=8080",
            "--num-cpus=1",
            "--num-gpus=1",
            "--resources='{\"x\": 1}'; rm -rf /",
        ])
    );
    // Workers get no ports added.
    assert!(pod.spec.as_ref().unwrap().containers[0].ports.is_none());
}

#[test]
fn user_params_override_defaults_and_cpu_rounds_up() {
    let mut rc = cluster();
    rc.spec.head_group_spec.template = template(container("h", Some("1500m"), None), None);
    rc.spec.head_group_spec.ray_start_params = BTreeMap::from([
        ("dashboard-host".to_string(), "127.0.0.1".to_string()),
        ("metrics-export-port".to_string(), "9000".to_string()),
    ]);
    let (_, args) = args_of(&head_pod(&rc, "a").unwrap());
    assert_eq!(
        args,
        s(&[
            "start",
            "--head",
            "--block",
            "--dashboard-agent-listen-port=52365",
            "--dashboard-host=127.0.0.1",
            "--metrics-export-port=9000",
            "--num-cpus=2",
        ])
    );
    rc.spec.head_group_spec.ray_start_params =
        BTreeMap::from([("num-cpus".to_string(), "0".to_string())]);
    let (_, args) = args_of(&head_pod(&rc, "a").unwrap());
    assert!(args.contains(&"--num-cpus=0".to_string()));
    assert!(!args.contains(&"--num-cpus=2".to_string()));
}

#[test]
fn user_command_is_kept_and_env_and_ports_not_duplicated() {
    let mut rc = cluster();
    let mut c = container("h", None, None);
    c.command = Some(s(&["/bin/my-ray"]));
    c.env = Some(vec![EnvVar {
        name: "RAY_SERVE_KV_TIMEOUT_S".to_string(),
        value: Some("30".to_string()),
        value_from: None,
    }]);
    c.ports = Some(vec![
        ContainerPort {
            name: Some("gcs".to_string()),
            container_port: 6379,
            ..Default::default()
        },
        ContainerPort {
            name: Some("dashboard".to_string()),
            container_port: 9999,
            ..Default::default()
        },
    ]);
    rc.spec.head_group_spec.template = template(c, None);
    let pod = head_pod(&rc, "a").unwrap();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.command, Some(s(&["/bin/my-ray"])));
    assert_eq!(c.args, None);
    let env = c.env.clone().unwrap();
    assert_eq!(env.len(), 2);
    assert_eq!(env[0].value.as_deref(), Some("30"));
    assert_eq!(env[1].name, "RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS");
    let ports = c.ports.clone().unwrap();
    // 6379 and dashboard are named by the template; 4 more are added.
    assert_eq!(ports.len(), 6);
    assert!(
        !ports
            .iter()
            .any(|p| p.name.as_deref() == Some("gcs-server"))
    );
}

#[test]
fn errors() {
    let mut rc = cluster();
    rc.metadata.uid = None;
    assert_eq!(
        head_pod(&rc, "a").unwrap_err(),
        BuildError::MissingUid("rc".to_string())
    );
    assert!(head_service(&rc).is_err());
    let mut rc = cluster();
    rc.metadata.name = None;
    assert_eq!(head_pod(&rc, "a").unwrap_err(), BuildError::MissingName);
    let mut rc = cluster();
    rc.spec.head_group_spec.template.spec = Some(PodSpec::default());
    assert!(matches!(
        head_pod(&rc, "a").unwrap_err(),
        BuildError::NoContainer(_)
    ));
    let mut rc = cluster();
    rc.spec.head_group_spec.template = template(container("h", Some("lots"), None), None);
    assert!(matches!(
        head_pod(&rc, "a").unwrap_err(),
        BuildError::Quantity { what: "cpu", .. }
    ));
    assert_eq!(
        worker_pod(&cluster(), "nope", "a").unwrap_err(),
        BuildError::NoSuchGroup("nope".to_string())
    );
}

#[test]
fn service_shape() {
    let mut rc = cluster();
    rc.spec.head_service_annotations = Some(BTreeMap::from([("a".to_string(), "b".to_string())]));
    let svc = head_service(&rc).unwrap();
    assert_eq!(svc.metadata.name.as_deref(), Some("rc-head-svc"));
    assert_eq!(svc.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(svc.metadata.annotations.clone().unwrap()["a"], "b");
    assert_eq!(
        svc.metadata.owner_references.clone().unwrap()[0].uid,
        "uid-1"
    );
    let spec = svc.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.selector.unwrap(),
        BTreeMap::from([
            ("ray.io/cluster".to_string(), "rc".to_string()),
            ("ray.io/node-type".to_string(), "head".to_string()),
        ])
    );
    let ports: Vec<(String, i32)> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("gcs-server".to_string(), 6379),
            ("dashboard".to_string(), 8265),
            ("client".to_string(), 10001),
            ("serve".to_string(), 8000),
            ("metrics".to_string(), 8080),
            ("dashboard-agent".to_string(), 52365),
        ]
    );
    let eps = service_endpoints(&head_service(&rc).unwrap());
    assert_eq!(eps.len(), 6);
    assert_eq!(eps["gcs-server"], "6379");
    assert_eq!(eps["dashboard-agent"], "52365");
    assert!(service_endpoints(&Service::default()).is_empty());
    rc.spec.head_group_spec.service_type = Some("NodePort".to_string());
    assert_eq!(
        head_service(&rc).unwrap().spec.unwrap().type_.as_deref(),
        Some("NodePort")
    );
}

fn wpod(name: &str, group: &str, created: i64) -> Pod {
    let mut p = worker_pod(&cluster(), "small", "x").unwrap();
    p.metadata.name = Some(name.to_string());
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_GROUP.to_string(), group.to_string());
    p.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
    ));
    p
}

#[test]
fn diff_creates_missing() {
    let mut spec = cluster().spec;
    spec.worker_group_specs = vec![group("a", 3), group("b", 1)];
    let d = worker_diff(&spec, &[wpod("a1", "a", 1)]);
    assert_eq!(
        d.to_create,
        vec![("a".to_string(), 2), ("b".to_string(), 1)]
    );
    assert!(d.to_delete.is_empty());
    let d = worker_diff(
        &spec,
        &[
            wpod("a1", "a", 1),
            wpod("a2", "a", 1),
            wpod("a3", "a", 1),
            wpod("b1", "b", 1),
        ],
    );
    assert_eq!(d, WorkerDiff::default());
}

#[test]
fn diff_deletes_newest_first() {
    let mut spec = cluster().spec;
    spec.worker_group_specs = vec![group("a", 1)];
    let d = worker_diff(
        &spec,
        &[
            wpod("old", "a", 1),
            wpod("new", "a", 3),
            wpod("mid", "a", 2),
        ],
    );
    assert_eq!(d.to_delete, s(&["new", "mid"]));
    assert!(d.to_create.is_empty());
}

#[test]
fn diff_workers_to_delete_first() {
    let mut spec = cluster().spec;
    let mut g = group("a", 1);
    g.scale_strategy = Some(ScaleStrategy {
        workers_to_delete: s(&["old", "gone-already"]),
    });
    spec.worker_group_specs = vec![g];
    let d = worker_diff(&spec, &[wpod("old", "a", 1), wpod("new", "a", 3)]);
    assert_eq!(d.to_delete, s(&["old"]));
    assert!(d.to_create.is_empty());
    // Deleting a named worker below the desired count creates a replacement.
    spec.worker_group_specs[0].replicas = Some(2);
    let d = worker_diff(&spec, &[wpod("old", "a", 1), wpod("new", "a", 3)]);
    assert_eq!(d.to_delete, s(&["old"]));
    assert_eq!(d.to_create, vec![("a".to_string(), 1)]);
}

#[test]
fn diff_ignores_terminating_head_and_deletes_unknown_groups() {
    let mut spec = cluster().spec;
    spec.worker_group_specs = vec![group("a", 1)];
    let mut dying = wpod("dying", "a", 5);
    dying.metadata.deletion_timestamp = dying.metadata.creation_timestamp.clone();
    let head = head_pod(&cluster(), "h").unwrap();
    let d = worker_diff(&spec, &[dying, head, wpod("stray", "zzz", 1)]);
    assert_eq!(d.to_create, vec![("a".to_string(), 1)]);
    assert_eq!(d.to_delete, s(&["stray"]));
}

#[test]
fn diff_clamps_and_suspends() {
    let mut spec = cluster().spec;
    let mut g = group("a", 9);
    g.max_replicas = Some(2);
    spec.worker_group_specs = vec![g];
    assert_eq!(
        worker_diff(&spec, &[]).to_create,
        vec![("a".to_string(), 2)]
    );
    spec.suspend = Some(true);
    let d = worker_diff(&spec, &[wpod("a1", "a", 1)]);
    assert!(d.to_create.is_empty());
    assert_eq!(d.to_delete, s(&["a1"]));
}

fn set_status(mut p: Pod, phase: &str, ready: bool, ip: Option<&str>) -> Pod {
    p.status = Some(PodStatus {
        phase: Some(phase.to_string()),
        pod_ip: ip.map(str::to_string),
        conditions: Some(vec![PodCondition {
            type_: "Ready".to_string(),
            status: if ready { "True" } else { "False" }.to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

#[test]
fn status_from_pods() {
    let rc = cluster();
    let mut spec = rc.spec.clone();
    spec.worker_group_specs = vec![group("small", 2)];
    let head = head_pod(&rc, "h").unwrap();
    let w1 = worker_pod(&rc, "small", "1").unwrap();
    let w2 = worker_pod(&rc, "small", "2").unwrap();

    let st = cluster_status(&spec, &[head.clone(), w1.clone(), w2.clone()]);
    assert_eq!(st.desired_worker_replicas, 2);
    assert_eq!(st.available_worker_replicas, 0);
    assert_eq!(st.ready_worker_replicas, 0);
    assert_eq!(st.state, None);
    assert_eq!(
        st.head.clone().unwrap().pod_name.as_deref(),
        Some("rc-head-h")
    );
    assert_eq!(st.head.unwrap().pod_ip, None);

    let head_up = set_status(head.clone(), "Running", true, Some("10.0.0.1"));
    let w1_up = set_status(w1.clone(), "Running", true, None);
    let w2_running = set_status(w2.clone(), "Running", false, None);
    let st = cluster_status(&spec, &[head_up.clone(), w1_up.clone(), w2_running.clone()]);
    assert_eq!(st.available_worker_replicas, 2);
    assert_eq!(st.ready_worker_replicas, 1);
    assert_eq!(st.state, None);
    assert_eq!(st.head.unwrap().pod_ip.as_deref(), Some("10.0.0.1"));

    let w2_up = set_status(w2, "Running", true, None);
    let st = cluster_status(&spec, &[head_up.clone(), w1_up.clone(), w2_up.clone()]);
    assert_eq!(st.ready_worker_replicas, 2);
    assert_eq!(st.state.as_deref(), Some("ready"));

    // A head that is not ready keeps the cluster from being ready.
    let head_pending = set_status(head, "Pending", true, None);
    let st = cluster_status(&spec, &[head_pending, w1_up.clone(), w2_up.clone()]);
    assert_eq!(st.state, None);
    // No head at all.
    assert_eq!(cluster_status(&spec, &[w1_up, w2_up]).state, None);

    spec.suspend = Some(true);
    let st = cluster_status(&spec, &[]);
    assert_eq!(st.state.as_deref(), Some("suspended"));
    assert_eq!(st.desired_worker_replicas, 0);
    assert!(st.head.is_none());
}

fn desired(spec: &RayClusterSpec) -> (String, String) {
    let d = rayservice_api::resources::desired_resources(spec);
    (d.cpu(), d.memory())
}

#[test]
fn desired_resources_count_the_head_and_the_desired_workers() {
    // Head 2 CPU / 5Gi (limits only), one worker 1 CPU / 2Gi.
    let mut rc = cluster();
    assert_eq!(desired(&rc.spec), ("3".to_string(), "7Gi".to_string()));
    // Requests win over limits; millicores stay exact.
    let worker = &mut rc.spec.worker_group_specs[0];
    worker.replicas = Some(3);
    let container = &mut worker.template.spec.as_mut().map(|s| &mut s.containers[0]);
    if let Some(c) = container
        && let Some(resources) = c.resources.as_mut()
    {
        resources.requests = Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("500m".to_string())),
            ("memory".to_string(), Quantity("512Mi".to_string())),
        ]));
    }
    assert_eq!(
        desired(&rc.spec),
        ("3500m".to_string(), "6656Mi".to_string())
    );
    rc.spec.suspend = Some(true);
    assert_eq!(desired(&rc.spec), ("0".to_string(), "0".to_string()));
}
