//! Resources, read once for both platforms with KubeRay v1.7's rules:
//! - what `ray start` is told about a node, from its Ray container ([`RayResources`]);
//! - what a whole cluster asks of the machine or of Kubernetes ([`desired_resources`]), shown as
//!   `desiredCPU`, `desiredMemory`, `desiredGPU` and `desiredTPU` in a RayCluster's status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use thiserror::Error;

use crate::quantity::{
    QuantityError, format_cpu_millis, format_memory_bytes, parse_amount, parse_count,
    parse_cpu_millis, parse_memory_quantity,
};
use crate::types::RayClusterSpec;

/// Kubernetes' TPU resource name.
pub const TPU_RESOURCE: &str = "google.com/tpu";

/// Accelerators (other than GPUs) that become a custom Ray resource: Kubernetes name, Ray name.
/// The first one a container's limits name (in name order) is announced.
pub const CUSTOM_ACCELERATORS: &[(&str, &str)] = &[
    ("aws.amazon.com/neuroncore", "neuron_cores"),
    (TPU_RESOURCE, "TPU"),
];

/// A container's resource quantity cannot be read.
#[derive(Debug, Error, PartialEq)]
#[error("container {container:?}: {source}")]
pub struct ResourceError {
    /// The container's name.
    pub container: String,
    /// What is wrong with the quantity.
    #[source]
    pub source: QuantityError,
}

/// Whether a Kubernetes resource name counts as GPUs: any name ending in `gpu`
/// (`nvidia.com/gpu`, `amd.com/gpu`) and NVIDIA MIG slices (`nvidia.com/mig-2g.32gb`).
pub fn is_gpu_resource(name: &str) -> bool {
    if name.ends_with("gpu") {
        return true;
    }
    // nvidia.com/mig-<digits>g.<digits>gb
    let Some(rest) = name.strip_prefix("nvidia.com/mig-") else {
        return false;
    };
    let Some((slices, memory)) = rest.split_once("g.") else {
        return false;
    };
    let Some(memory) = memory.strip_suffix("gb") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(slices) && digits(memory)
}

/// The container that runs Ray in a pod template: the first one, as in KubeRay.
pub fn ray_container(template: &PodTemplateSpec) -> Option<&Container> {
    template
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
}

/// What `ray start` announces for a node unless its `rayStartParams` say otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RayResources {
    /// `--num-cpus`: the CPU limit, else the CPU request, rounded up to whole CPUs.
    pub num_cpus: Option<u64>,
    /// `--memory`: the memory limit in bytes (a request alone says nothing).
    pub memory_bytes: Option<u64>,
    /// `--num-gpus`: the first GPU limit (by resource name), rounded up.
    pub num_gpus: Option<u64>,
    /// A custom accelerator for `--resources`: its Ray name and amount, from the limits.
    pub accelerator: Option<(String, f64)>,
}

impl RayResources {
    /// The resources of a node whose Ray container is `container`. Zero quantities announce
    /// nothing, as in KubeRay.
    pub fn of_container(container: &Container) -> Result<RayResources, ResourceError> {
        let error = |source| ResourceError {
            container: container.name.clone(),
            source,
        };
        let resources = container.resources.as_ref();
        let limits = resources.and_then(|r| r.limits.clone()).unwrap_or_default();
        let requests = resources
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        let count = |what: &'static str, list: &BTreeMap<_, _>, name: &str| {
            list.get(name)
                .map(
                    |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                        parse_count(what, &q.0)
                    },
                )
                .transpose()
                .map(|n| n.filter(|n| *n > 0))
        };
        let num_cpus = match count("cpu", &limits, "cpu").map_err(error)? {
            Some(n) => Some(n),
            None => count("cpu", &requests, "cpu").map_err(error)?,
        };
        let memory_bytes = limits
            .get("memory")
            .map(|q| parse_memory_quantity(&q.0))
            .transpose()
            .map_err(error)?
            .filter(|n| *n > 0);
        let mut num_gpus = None;
        let mut accelerator = None;
        for (name, quantity) in &limits {
            if num_gpus.is_none() && is_gpu_resource(name) {
                num_gpus = Some(parse_count("gpu", &quantity.0).map_err(error)?).filter(|n| *n > 0);
            }
            if accelerator.is_none()
                && let Some((_, ray_name)) = CUSTOM_ACCELERATORS.iter().find(|(k, _)| k == name)
            {
                let amount = parse_amount("accelerator", &quantity.0).map_err(error)?;
                if amount > 0.0 {
                    accelerator = Some(((*ray_name).to_string(), amount));
                }
            }
        }
        Ok(RayResources {
            num_cpus,
            memory_bytes,
            num_gpus,
            accelerator,
        })
    }

    /// The resources of the Ray container of `template`; none when it has no container.
    pub fn of_template(template: &PodTemplateSpec) -> Result<RayResources, ResourceError> {
        ray_container(template).map_or(Ok(RayResources::default()), RayResources::of_container)
    }
}

/// What a whole cluster asks for: its head and its desired workers (KubeRay's
/// `CalculateDesiredResources`). Each container counts its requests, and its limits for what
/// it does not request. A quantity that does not parse counts as zero (creating the node
/// reports it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DesiredResources {
    /// Milli-CPUs.
    pub cpu_millis: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// GPUs, every GPU resource name counted.
    pub gpus: u64,
    /// TPUs (`google.com/tpu`).
    pub tpus: u64,
}

impl DesiredResources {
    /// `desiredCPU` as Kubernetes writes it (`"3"`, `"2500m"`).
    pub fn cpu(&self) -> String {
        format_cpu_millis(self.cpu_millis)
    }
    /// `desiredMemory` as Kubernetes writes it (`"6Gi"`).
    pub fn memory(&self) -> String {
        format_memory_bytes(self.memory_bytes)
    }
    /// `desiredGPU`.
    pub fn gpu(&self) -> String {
        self.gpus.to_string()
    }
    /// `desiredTPU`.
    pub fn tpu(&self) -> String {
        self.tpus.to_string()
    }

    fn add(&mut self, other: DesiredResources, times: u64) {
        self.cpu_millis = self
            .cpu_millis
            .saturating_add(other.cpu_millis.saturating_mul(times));
        self.memory_bytes = self
            .memory_bytes
            .saturating_add(other.memory_bytes.saturating_mul(times));
        self.gpus = self.gpus.saturating_add(other.gpus.saturating_mul(times));
        self.tpus = self.tpus.saturating_add(other.tpus.saturating_mul(times));
    }
}

/// What one pod of `template` asks for.
pub fn pod_resources(template: &PodTemplateSpec) -> DesiredResources {
    let containers = template.spec.as_ref().map(|s| s.containers.as_slice());
    let mut total = DesiredResources::default();
    for container in containers.unwrap_or_default() {
        let resources = container.resources.as_ref();
        let mut wanted = resources.and_then(|r| r.limits.clone()).unwrap_or_default();
        wanted.extend(
            resources
                .and_then(|r| r.requests.clone())
                .unwrap_or_default(),
        );
        let mut one = DesiredResources::default();
        for (name, quantity) in &wanted {
            let q = &quantity.0;
            if name == "cpu" {
                one.cpu_millis = parse_cpu_millis(q).unwrap_or(0);
            } else if name == "memory" {
                one.memory_bytes = parse_memory_quantity(q).unwrap_or(0);
            } else if is_gpu_resource(name) {
                one.gpus = one.gpus.saturating_add(parse_count("gpu", q).unwrap_or(0));
            } else if name == TPU_RESOURCE {
                one.tpus = parse_count("tpu", q).unwrap_or(0);
            }
        }
        total.add(one, 1);
    }
    total
}

/// What the whole cluster asks for: nothing while suspended, else the head plus every worker
/// group's pod times its desired replicas (hosts included).
pub fn desired_resources(spec: &RayClusterSpec) -> DesiredResources {
    let mut total = DesiredResources::default();
    if spec.suspend == Some(true) {
        return total;
    }
    total.add(pod_resources(&spec.head_group_spec.template), 1);
    for group in &spec.worker_group_specs {
        let replicas = u64::try_from(group.desired_replicas()).unwrap_or(0);
        total.add(pod_resources(&group.template), replicas);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn list(items: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        (!items.is_empty()).then(|| {
            items
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    }

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        Container {
            name: "ray".into(),
            resources: Some(ResourceRequirements {
                limits: list(limits),
                requests: list(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn template(containers: Vec<Container>) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn gpu_names() {
        for yes in ["nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-2g.32gb"] {
            assert!(is_gpu_resource(yes), "{yes}");
        }
        for no in [
            "cpu",
            "nvidia.com/mig-2g",
            "nvidia.com/mig-xg.1gb",
            "google.com/tpu",
        ] {
            assert!(!is_gpu_resource(no), "{no}");
        }
    }

    #[test]
    fn ray_start_resources_follow_kuberay() {
        let r = RayResources::of_container(&container(
            &[("cpu", "1500m"), ("memory", "2Gi"), ("nvidia.com/gpu", "1")],
            &[("cpu", "500m"), ("memory", "1Gi")],
        ))
        .unwrap();
        assert_eq!(r.num_cpus, Some(2));
        assert_eq!(r.memory_bytes, Some(2 << 30));
        assert_eq!(r.num_gpus, Some(1));
        assert_eq!(r.accelerator, None);

        // No limit: the CPU request counts, the memory request does not.
        let r = RayResources::of_container(&container(&[], &[("cpu", "3"), ("memory", "1Gi")]))
            .unwrap();
        assert_eq!((r.num_cpus, r.memory_bytes), (Some(3), None));

        // A zero limit falls back to the request; TPUs become a custom resource.
        let r = RayResources::of_container(&container(
            &[("cpu", "0"), (TPU_RESOURCE, "4")],
            &[("cpu", "2")],
        ))
        .unwrap();
        assert_eq!(r.num_cpus, Some(2));
        assert_eq!(r.accelerator, Some(("TPU".to_string(), 4.0)));

        let err = RayResources::of_container(&container(&[("cpu", "two")], &[])).unwrap_err();
        assert!(err.to_string().contains("container \"ray\""), "{err}");
        assert!(err.to_string().contains("\"two\""), "{err}");
    }

    #[test]
    fn desired_resources_count_every_container_and_desired_worker() {
        let mut spec = RayClusterSpec::default();
        spec.head_group_spec.template = template(vec![
            container(&[("cpu", "1"), ("memory", "2Gi")], &[("cpu", "500m")]),
            container(&[("cpu", "1")], &[]),
        ]);
        spec.worker_group_specs = vec![crate::types::WorkerGroupSpec {
            group_name: "g".into(),
            replicas: Some(2),
            template: template(vec![container(
                &[("cpu", "2"), ("memory", "4Gi"), ("nvidia.com/gpu", "1")],
                &[],
            )]),
            ..Default::default()
        }];
        let d = desired_resources(&spec);
        assert_eq!(d.cpu(), "5500m");
        assert_eq!(d.memory(), "10Gi");
        assert_eq!(d.gpu(), "2");
        assert_eq!(d.tpu(), "0");
        spec.suspend = Some(true);
        assert_eq!(desired_resources(&spec), DesiredResources::default());
    }
}
