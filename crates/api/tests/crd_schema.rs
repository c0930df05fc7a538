//! Our CRDs against KubeRay's: every property path of KubeRay's `openAPIV3Schema` (RayCluster and
//! RayService, version `v1`) must exist in ours with the same type.
//!
//! - KubeRay v1.5.0: its CRDs ship in the Go module `github.com/ray-project/kuberay/ray-operator`
//!   (`config/crd/bases`). The test asks `go mod download -json` for the module's directory (the
//!   Go module cache; set `KUBERAY_V150_CRDS` to a directory holding the two files to skip Go).
//!   If neither works the test fails and says why: it never passes without comparing.
//! - KubeRay v1.7.0 (what we match): not a Go module download away in CI, so the property paths
//!   and types of its two CRDs are transcribed in `tests/fixtures/kuberay-v1.7.0-schema.txt`
//!   (origin and format in its header; `write_v17_fixture` below regenerates it).
//!
//! Rules:
//! - "Type" is the node's `type`, or `int-or-string` (`x-kubernetes-int-or-string`), or `-` when
//!   the node has neither (it must then have neither in ours too).
//! - A path under a node of ours that has `x-kubernetes-preserve-unknown-fields: true` counts as
//!   covered: the apiserver keeps whatever is there, which is at least what KubeRay accepts. (No
//!   such node of ours lies on a KubeRay path today; the rule is there for fields we choose to
//!   pass through.)
//! - The root's `apiVersion`, `kind` and `metadata` are left out: kube's CRD derive does not
//!   declare them and the apiserver validates them itself for every CRD.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rayservice_api::crd::crds;
use serde_json::Value;

/// Path (`.spec.workerGroupSpecs[].template`) to type descriptor.
type Paths = BTreeMap<String, String>;

const KINDS: [(&str, &str); 2] = [
    ("RayCluster", "ray.io_rayclusters.yaml"),
    ("RayService", "ray.io_rayservices.yaml"),
];

fn descriptor(node: &Value) -> String {
    if let Some(kind) = node.get("type").and_then(Value::as_str) {
        kind.to_string()
    } else if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        "int-or-string".to_string()
    } else {
        "-".to_string()
    }
}

fn walk(node: &Value, at: &str, out: &mut Paths) {
    out.insert(at.to_string(), descriptor(node));
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(child, &format!("{at}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items").filter(|v| v.is_object()) {
        walk(items, &format!("{at}[]"), out);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, &format!("{at}{{}}"), out);
    }
}

/// Every path of a CRD's `v1` schema, without the root's object metadata.
fn crd_paths(crd: &Value) -> Paths {
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let v1 = versions
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap_or_else(|| panic!("no v1 in {}", crd["metadata"]["name"]));
    let mut paths = Paths::new();
    walk(&v1["schema"]["openAPIV3Schema"], "", &mut paths);
    paths.retain(|path, _| !matches!(path.as_str(), ".apiVersion" | ".kind" | ".metadata"));
    paths
}

/// Our paths per kind, and the set of our paths that preserve unknown fields.
fn ours() -> BTreeMap<String, (Paths, Vec<String>)> {
    crds()
        .into_iter()
        .map(|crd| {
            let value = serde_json::to_value(&crd).expect("CRD as JSON");
            let paths = crd_paths(&value);
            let mut preserved = Vec::new();
            let v1 = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            collect_preserved(v1, "", &mut preserved);
            (crd.spec.names.kind.clone(), (paths, preserved))
        })
        .collect()
}

fn collect_preserved(node: &Value, at: &str, out: &mut Vec<String>) {
    if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        out.push(at.to_string());
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            collect_preserved(child, &format!("{at}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items").filter(|v| v.is_object()) {
        collect_preserved(items, &format!("{at}[]"), out);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        collect_preserved(values, &format!("{at}{{}}"), out);
    }
}

/// What of `theirs` is missing from ours or typed differently, one line each.
fn differences(kind: &str, theirs: &Paths) -> Vec<String> {
    let ours = ours();
    let (paths, preserved) = ours
        .get(kind)
        .unwrap_or_else(|| panic!("no CRD of ours for {kind}"));
    let covered = |path: &str| {
        preserved
            .iter()
            .any(|p| path.len() > p.len() && path.starts_with(p.as_str()))
    };
    let mut problems = Vec::new();
    for (path, kind_theirs) in theirs {
        match paths.get(path) {
            Some(kind_ours) if kind_ours == kind_theirs => {}
            Some(_) if covered(path) => {}
            Some(kind_ours) => problems.push(format!(
                "{kind} {path}: KubeRay's type is {kind_theirs}, ours is {kind_ours}"
            )),
            None if covered(path) => {}
            None => problems.push(format!(
                "{kind} {path}: missing (KubeRay's type is {kind_theirs})"
            )),
        }
    }
    problems
}

fn read_crd(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut documents = rayservice_api::yaml::documents(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    documents.retain(|d| !d.is_null());
    assert_eq!(documents.len(), 1, "{}: one CRD expected", path.display());
    documents.remove(0)
}

/// The directory with KubeRay v1.5.0's CRDs: `KUBERAY_V150_CRDS`, or the Go module's
/// `config/crd/bases` (downloaded into the Go module cache when missing).
fn v150_crds_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KUBERAY_V150_CRDS") {
        return Ok(PathBuf::from(dir));
    }
    let module = "github.com/ray-project/kuberay/ray-operator@v1.5.0";
    let output = Command::new("go")
        .args(["mod", "download", "-json", module])
        .env("GOFLAGS", "-mod=mod")
        // Outside any module, so that no go.mod around the checkout is involved.
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| format!("cannot run `go mod download -json {module}` ({e}); install Go or set KUBERAY_V150_CRDS to a directory holding KubeRay v1.5.0's ray.io_rayclusters.yaml and ray.io_rayservices.yaml"))?;
    let answer: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "`go mod download -json {module}` gave no JSON ({e}); status {}, stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if let Some(error) = answer.get("Error").and_then(Value::as_str) {
        return Err(format!("`go mod download {module}` failed: {error}"));
    }
    let dir = answer
        .get("Dir")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`go mod download -json {module}` named no Dir: {answer}"))?;
    Ok(Path::new(dir).join("config/crd/bases"))
}

#[test]
fn every_kuberay_v150_schema_path_exists_in_ours_with_its_type() {
    let dir = v150_crds_dir().unwrap_or_else(|e| panic!("KubeRay v1.5.0's CRDs: {e}"));
    let mut problems = Vec::new();
    for (kind, file) in KINDS {
        let theirs = crd_paths(&read_crd(&dir.join(file)));
        assert!(
            theirs.len() > 1000,
            "{kind}: only {} paths read from {}",
            theirs.len(),
            dir.display()
        );
        problems.extend(differences(kind, &theirs));
    }
    assert!(
        problems.is_empty(),
        "{} differences from KubeRay v1.5.0:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---- KubeRay v1.7.0, from the checked-in fixture ----

const FIXTURE: &str = "tests/fixtures/kuberay-v1.7.0-schema.txt";

/// The fixture's format: per kind a line `kind KIND`, then one line per path as an indented tree:
/// two spaces per level, the step (`name`, `[]` for items, `{}` for map values), a space and
/// the type. RayService's `.spec.rayClusterConfig` and `.status.*.rayClusterStatus` subtrees are
/// RayCluster's `.spec` and `.status` (checked when the fixture is written) and stored once.
fn parse_fixture(text: &str) -> BTreeMap<String, Paths> {
    let mut kinds: BTreeMap<String, Paths> = BTreeMap::new();
    let mut kind = String::new();
    let mut stack: Vec<String> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("kind ") {
            kind = name.to_string();
            stack.clear();
            kinds.entry(kind.clone()).or_default();
            continue;
        }
        let depth = (line.len() - line.trim_start().len()) / 2;
        let (step, descriptor) = line
            .trim_start()
            .split_once(' ')
            .unwrap_or_else(|| panic!("{FIXTURE}:{}: `step type` expected", number + 1));
        stack.truncate(depth);
        assert_eq!(stack.len(), depth, "{FIXTURE}:{}: indentation", number + 1);
        let parent = stack.last().cloned().unwrap_or_default();
        let path = match step {
            "." => String::new(),
            "[]" | "{}" => format!("{parent}{step}"),
            name => format!("{parent}.{name}"),
        };
        stack.push(path.clone());
        kinds
            .get_mut(&kind)
            .unwrap_or_else(|| panic!("{FIXTURE}: a path before any `kind` line"))
            .insert(path, descriptor.to_string());
    }
    // Put RayCluster's spec and status back where RayService embeds them.
    let cluster = kinds.get("RayCluster").cloned().unwrap_or_default();
    if let Some(service) = kinds.get_mut("RayService") {
        for (from, to) in shared_subtrees() {
            for (path, descriptor) in &cluster {
                if let Some(rest) = path.strip_prefix(from)
                    && (rest.is_empty() || !rest.starts_with(char::is_alphanumeric))
                {
                    service.insert(format!("{to}{rest}"), descriptor.clone());
                }
            }
        }
    }
    kinds
}

/// RayCluster subtrees that RayService embeds: (RayCluster path, RayService path).
fn shared_subtrees() -> [(&'static str, &'static str); 3] {
    [
        (".spec", ".spec.rayClusterConfig"),
        (".status", ".status.activeServiceStatus.rayClusterStatus"),
        (".status", ".status.pendingServiceStatus.rayClusterStatus"),
    ]
}

fn render_fixture(kinds: &BTreeMap<String, Paths>) -> String {
    let mut out = String::new();
    for (kind, paths) in kinds {
        out.push_str(&format!("kind {kind}\n"));
        // Depth first: every node right after its parent.
        let mut ordered: Vec<(Vec<String>, &String)> = paths
            .iter()
            .filter(|(path, _)| {
                kind != "RayService"
                    || !shared_subtrees().iter().any(|(_, to)| {
                        path.strip_prefix(to).is_some_and(|rest| {
                            rest.is_empty() || !rest.starts_with(char::is_alphanumeric)
                        })
                    })
            })
            .map(|(path, descriptor)| (steps(path), descriptor))
            .collect();
        ordered.sort();
        for (steps, descriptor) in ordered {
            let step = steps.last().map_or(".", String::as_str);
            out.push_str(&format!(
                "{}{step} {descriptor}\n",
                "  ".repeat(steps.len())
            ));
        }
    }
    out
}

/// The steps of a path: `.a.b[]` is `a`, `b`, `[]`; the root has none.
fn steps(path: &str) -> Vec<String> {
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[]") {
            steps.push("[]".to_string());
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{}") {
            steps.push("{}".to_string());
            rest = after;
        } else {
            let body = rest.strip_prefix('.').unwrap_or(rest);
            let end = body.find(['.', '[', '{']).unwrap_or(body.len());
            steps.push(body[..end].to_string());
            rest = &body[end..];
        }
    }
    steps
}

#[test]
fn every_kuberay_v170_schema_path_exists_in_ours_with_its_type() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let kinds = parse_fixture(&text);
    let mut problems = Vec::new();
    for (kind, _) in KINDS {
        let theirs = kinds
            .get(kind)
            .unwrap_or_else(|| panic!("{FIXTURE} has no {kind}"));
        assert!(theirs.len() > 1000, "{kind}: only {} paths", theirs.len());
        problems.extend(differences(kind, theirs));
    }
    assert!(
        problems.is_empty(),
        "{} differences from KubeRay v1.7.0:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_fixture_format_round_trips() {
    let (paths, _) = ours().remove("RayCluster").expect("RayCluster");
    let mut kinds = BTreeMap::new();
    kinds.insert("RayCluster".to_string(), paths.clone());
    let text = render_fixture(&kinds);
    assert_eq!(parse_fixture(&text).remove("RayCluster"), Some(paths));
    assert!(steps("").is_empty());
    assert_eq!(steps(".a.b[]{}.c"), ["a", "b", "[]", "{}", "c"]);
}

/// Regenerates the v1.7.0 fixture from KubeRay's CRD files:
/// `git show v1.7.0:ray-operator/config/crd/bases/ray.io_rayclusters.yaml` (and rayservices)
/// into a directory, then
/// `KUBERAY_V170_CRDS=DIR cargo test -p rayservice-api --test crd_schema -- --ignored`.
#[test]
#[ignore = "needs KubeRay v1.7.0's CRD files; rewrites the fixture"]
fn write_v17_fixture() {
    let dir = PathBuf::from(std::env::var_os("KUBERAY_V170_CRDS").expect("KUBERAY_V170_CRDS"));
    let mut kinds = BTreeMap::new();
    for (kind, file) in KINDS {
        kinds.insert(kind.to_string(), crd_paths(&read_crd(&dir.join(file))));
    }
    // The shared subtrees must really be equal before they are stored once.
    let cluster = kinds["RayCluster"].clone();
    for (from, to) in shared_subtrees() {
        for (path, descriptor) in &cluster {
            if let Some(rest) = path.strip_prefix(from)
                && (rest.is_empty() || !rest.starts_with(char::is_alphanumeric))
            {
                assert_eq!(
                    kinds["RayService"].get(&format!("{to}{rest}")),
                    Some(descriptor),
                    "RayService {to}{rest} differs from RayCluster {path}"
                );
            }
        }
        let extra: Vec<&String> = kinds["RayService"]
            .keys()
            .filter(|p| {
                p.strip_prefix(to).is_some_and(|rest| {
                    (rest.is_empty() || !rest.starts_with(char::is_alphanumeric))
                        && !cluster.contains_key(&format!("{from}{rest}"))
                })
            })
            .collect();
        assert!(
            extra.is_empty(),
            "RayService has more under {to}: {extra:?}"
        );
    }
    let header = "# KubeRay v1.7.0's CRD schemas (version v1), as property paths and types, for\n\
                  # tests/crd_schema.rs. Origin: github.com/ray-project/kuberay, tag v1.7.0,\n\
                  # ray-operator/config/crd/bases/ray.io_rayclusters.yaml and ray.io_rayservices.yaml.\n\
                  # Written by `write_v17_fixture` in tests/crd_schema.rs; the format is described there.\n";
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    std::fs::create_dir_all(out.parent().expect("fixtures dir")).expect("mkdir");
    std::fs::write(&out, format!("{header}{}", render_fixture(&kinds))).expect("write fixture");
    // What was written reads back as what was read.
    let text = std::fs::read_to_string(&out).expect("read back");
    assert_eq!(parse_fixture(&text), kinds);
}
