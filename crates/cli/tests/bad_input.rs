//! Bad input gets a clear error naming the file, the field and the fix, and touches nothing.
//! These tests need no Ray cluster.

mod common;

use common::{Env, write_yaml};

const GOOD: &str = r#"apiVersion: ray.io/v1
kind: RayService
metadata:
  name: demo
spec:
  serveConfigV2: |
    applications:
      - name: a
        import_path: m.app
        route_prefix: /a
  rayClusterConfig:
    headGroupSpec:
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-head
            resources:
              limits: {cpu: "1", memory: 1Gi}
"#;

/// Applies `text` as `bad.yaml` and returns the error output.
fn refused(env: &Env, text: &str) -> String {
    let path = write_yaml(env.home.path(), "bad.yaml", text);
    let stderr = env.fails(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    assert!(
        stderr.contains("bad.yaml"),
        "the error names the file: {stderr}"
    );
    assert!(
        !env.home.path().join("control.json").exists(),
        "nothing was started for a refused file"
    );
    stderr
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let env = Env::bare();
    let stderr = refused(
        &env,
        "apiVersion: ray.io/v1\nkind: RayService\nmetadata: {name: demo\nspec: {}\n",
    );
    assert!(stderr.contains("not valid YAML"), "{stderr}");
    assert!(stderr.contains("line"), "{stderr}");
}

#[test]
fn unknown_api_version_and_kind() {
    let env = Env::bare();
    let stderr = refused(&env, &GOOD.replace("ray.io/v1", "ray.io/v9"));
    assert!(
        stderr.contains("apiVersion") && stderr.contains("ray.io/v9") && stderr.contains("fix"),
        "{stderr}"
    );
    let stderr = refused(&env, &GOOD.replace("kind: RayService", "kind: RayServe"));
    assert!(
        stderr.contains("kind") && stderr.contains("RayServe"),
        "{stderr}"
    );
}

#[test]
fn unknown_field_is_named() {
    let env = Env::bare();
    let stderr = refused(&env, &GOOD.replace("rayStartParams", "rayStartParam"));
    assert!(
        stderr.contains("spec.rayClusterConfig.headGroupSpec.rayStartParam: unknown field"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `rayStartParams`"), "{stderr}");
}

#[test]
fn missing_cluster_config() {
    let env = Env::bare();
    let text = GOOD[..GOOD.find("  rayClusterConfig").expect("cluster config")].to_string();
    let stderr = refused(&env, &text);
    assert!(
        stderr.contains("spec.rayClusterConfig: is missing"),
        "{stderr}"
    );
}

#[test]
fn bad_names() {
    let env = Env::bare();
    let stderr = refused(&env, &GOOD.replace("name: demo", "name: Demo_App"));
    assert!(
        stderr.contains("metadata.name") && stderr.contains("DNS-1035"),
        "{stderr}"
    );
    let long = "a".repeat(48);
    let stderr = refused(&env, &GOOD.replace("name: demo", &format!("name: {long}")));
    assert!(
        stderr.contains("metadata.name") && stderr.contains("47"),
        "{stderr}"
    );
}

#[test]
fn serve_config_that_is_not_yaml() {
    let env = Env::bare();
    let stderr = refused(
        &env,
        &GOOD.replace("      - name: a\n", "      - name: [a\n"),
    );
    assert!(
        stderr.contains("spec.serveConfigV2") && stderr.contains("not valid YAML"),
        "{stderr}"
    );
}

#[test]
fn duplicate_application_names_and_prefixes() {
    let env = Env::bare();
    let twice = GOOD.replace(
        "        route_prefix: /a\n",
        "        route_prefix: /a\n      - name: a\n        import_path: m.other\n        route_prefix: /b\n",
    );
    let stderr = refused(&env, &twice);
    assert!(
        stderr.contains("applications[1].name") && stderr.contains("used twice"),
        "{stderr}"
    );
    let clash = GOOD.replace(
        "        route_prefix: /a\n",
        "        route_prefix: /a\n      - name: b\n        import_path: m.other\n        route_prefix: /a\n",
    );
    let stderr = refused(&env, &clash);
    assert!(
        stderr.contains("applications[1].route_prefix") && stderr.contains("/a"),
        "{stderr}"
    );
}

#[test]
fn both_serve_configs() {
    let env = Env::bare();
    let text = GOOD
        .replace("apiVersion: ray.io/v1", "apiVersion: ray.io/v1alpha1")
        .replace(
            "  serveConfigV2: |",
            "  serveConfig:\n    importPath: fruit.deployment_graph\n  serveConfigV2: |",
        );
    let stderr = refused(&env, &text);
    assert!(
        stderr.contains("serveConfig and serveConfigV2 are both set"),
        "{stderr}"
    );
}

#[test]
fn a_file_with_no_rayservice() {
    let env = Env::bare();
    let stderr = refused(
        &env,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert!(stderr.contains("no RayService"), "{stderr}");
}

#[test]
fn missing_file() {
    let env = Env::bare();
    let stderr = env.fails(&["apply", "-f", "/nonexistent/file.yaml"]);
    assert!(stderr.contains("/nonexistent/file.yaml"), "{stderr}");
}

#[test]
fn python_without_ray_is_refused_clearly() {
    let env = Env::bare().with("RAYSERVICE_PYTHON", "python3");
    let path = write_yaml(env.home.path(), "good.yaml", GOOD);
    let stderr = env.fails(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(
        stderr.contains("RAYSERVICE_PYTHON") && stderr.to_lowercase().contains("ray"),
        "{stderr}"
    );
    assert!(!env.home.path().join("control.json").exists());
}

#[test]
fn ray_that_cannot_be_installed_is_refused_clearly() {
    // No RAYSERVICE_PYTHON and no usable Python to build the managed environment with.
    let env = Env::bare().with("RAYSERVICE_BOOTSTRAP_PYTHON", "/nonexistent/python3");
    let path = write_yaml(env.home.path(), "good.yaml", GOOD);
    let stderr = env.fails(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(stderr.contains("/nonexistent/python3"), "{stderr}");
    assert!(
        stderr.contains("RAYSERVICE_PYTHON"),
        "the error says how to point at an existing Ray: {stderr}"
    );
    assert!(!env.home.path().join("control.json").exists());
}

#[test]
fn taken_serve_port_is_reported_and_its_owner_keeps_it() {
    let blocker = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = blocker.local_addr().expect("addr").port();
    let env = Env::new().with_serve_port(port);
    let path = write_yaml(env.home.path(), "good.yaml", GOOD);
    let stderr = env.fails(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        stderr.contains("RAYSERVICE_SERVE_PORT"),
        "the error says how to move it: {stderr}"
    );
    assert!(
        blocker.local_addr().is_ok(),
        "the program that had the port still has it"
    );
    assert!(common::listening(port));
}

#[test]
fn ray_is_installed_on_first_use_when_none_is_given() {
    // The default path: no RAYSERVICE_PYTHON, so the pinned Ray goes into a venv under the state dir.
    let env = Env::bare();
    let output = env.run(&["install-ray"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Ray 2.60.0 ready"), "{stderr}");
    let venv = env.home.path().join("ray/2.60.0/venv");
    assert!(
        venv.join("bin/ray").exists(),
        "managed venv at {}",
        venv.display()
    );
    // A second call finds it and installs nothing.
    let again = env.run(&["install-ray"]);
    assert!(again.status.success());
}
