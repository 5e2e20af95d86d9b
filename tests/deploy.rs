//! The deployment files under deploy/: every shipped config is accepted by
//! `sluice check-config` (with the environment its deployment gives it), and every
//! file a kustomization lists exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(suffix))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The environment variables a config names (`api_key_env = "X"`,
/// `client_keys_env = "X"`, not commented out).
fn named_env_vars(config: &str) -> BTreeSet<String> {
    config
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once('=')?;
            matches!(key.trim(), "api_key_env" | "client_keys_env")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .collect()
}

/// `sluice check-config --config PATH` in an environment holding only the variables the
/// config names (set to dummy values) and `extra`.
fn check_config(path: &Path, extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .current_dir(std::env::temp_dir())
        .env_clear();
    for name in named_env_vars(&read(path)) {
        command.env(name, "test:dummy-secret-value");
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run sluice: {e}"))
}

/// The effective config printed by a successful check-config.
fn accepted(path: &Path, extra: &[(&str, &str)]) -> String {
    let output = check_config(path, extra);
    assert!(
        output.status.success(),
        "check-config rejected {} (env {extra:?}): {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_has(printed: &str, line: &str, path: &Path) {
    assert!(
        printed.lines().any(|l| l.trim() == line),
        "{}: expected `{line}` in the effective config:\n{printed}",
        path.display()
    );
}

#[test]
fn every_shipped_config_is_accepted() {
    let root = Path::new(ROOT);
    let deploy = files_under(&root.join("deploy"), ".toml");
    assert!(
        deploy.len() >= 3,
        "expected at least 3 configs under deploy/, found {deploy:?}"
    );
    for path in deploy.iter().chain([&root.join("config/sluice.toml")]) {
        accepted(path, &[]);
    }

    // What each one listens on and forwards to, as shipped.
    let image = root.join("deploy/sluice.toml");
    let printed = accepted(&image, &[]);
    assert_has(&printed, "listen = \"0.0.0.0:8080\"", &image);
    assert_has(&printed, "base_url = \"https://api.openai.com/v1\"", &image);
    assert!(
        named_env_vars(&read(&image)).is_empty(),
        "the image's config passes the client's key through"
    );
    let example = root.join("config/sluice.toml");
    let printed = accepted(&example, &[]);
    assert_has(&printed, "listen = \"127.0.0.1:8080\"", &example);

    let sidecar = root.join("deploy/kubernetes/sidecar/sluice.toml");
    let printed = accepted(&sidecar, &[]);
    assert_has(&printed, "listen = \"127.0.0.1:8080\"", &sidecar);
    assert_has(&printed, "api_key_env = \"OPENAI_API_KEY\"", &sidecar);
    assert_has(&printed, "workers = 1", &sidecar);

    let shared = root.join("deploy/kubernetes/shared/sluice.toml");
    let printed = accepted(&shared, &[]);
    assert_has(&printed, "listen = \"0.0.0.0:8080\"", &shared);
    assert_has(&printed, "api_key_env = \"OPENAI_API_KEY\"", &shared);
    assert_has(
        &printed,
        "client_keys_env = \"SLUICE_CLIENT_KEYS\"",
        &shared,
    );
}

#[test]
fn configs_are_accepted_with_their_deployments_environment() {
    let root = Path::new(ROOT);

    // compose.yaml, in front of the mock upstream (the image sets the listen address).
    let image = root.join("deploy/sluice.toml");
    let printed = accepted(
        &image,
        &[
            ("SLUICE_SERVER__LISTEN", "0.0.0.0:8080"),
            ("SLUICE_CACHE__REDIS_URL", "redis://redis:6379/0"),
            ("SLUICE_UPSTREAMS__0__BASE_URL", "http://mock:9000/v1"),
        ],
    );
    assert_has(&printed, "base_url = \"http://mock:9000/v1\"", &image);
    assert_has(&printed, "redis_url = \"redis://redis:6379/0\"", &image);

    // The sidecar sets the listen address back to loopback: with the image's default
    // (every interface) sluice would refuse to hand out the upstream key.
    let sidecar = root.join("deploy/kubernetes/sidecar/sluice.toml");
    let printed = accepted(&sidecar, &[("SLUICE_SERVER__LISTEN", "127.0.0.1:8080")]);
    assert_has(&printed, "listen = \"127.0.0.1:8080\"", &sidecar);
    let refused = check_config(&sidecar, &[("SLUICE_SERVER__LISTEN", "0.0.0.0:8080")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "the sidecar's config on 0.0.0.0 without client keys must be refused: {stderr}"
    );
    assert!(stderr.contains("client_keys_env"), "{stderr}");

    let shared = root.join("deploy/kubernetes/shared/sluice.toml");
    let printed = accepted(
        &shared,
        &[
            ("SLUICE_SERVER__LISTEN", "0.0.0.0:8080"),
            ("SLUICE_CACHE__REDIS_URL", "redis://sluice-redis:6379/0"),
        ],
    );
    assert_has(
        &printed,
        "redis_url = \"redis://sluice-redis:6379/0\"",
        &shared,
    );
}

/// The entries of the block lists `- item` under `resources:` and under any `files:` of
/// a kustomization.yaml. Only the block style these files use is read (a list key at the
/// start of its line, one `- item` per line below it); the caller asserts that entries
/// were found, so a file written another way fails the test instead of passing it.
fn kustomization_entries(text: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut in_list = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let (true, Some(item)) = (in_list, trimmed.strip_prefix("- ")) {
            entries.push(item.trim().trim_matches('"').to_owned());
            continue;
        }
        let key = trimmed.trim_start_matches("- ");
        in_list = (key == "resources:" && !line.starts_with(' ')) || key == "files:";
    }
    entries
}

#[test]
fn every_file_a_kustomization_lists_exists() {
    let kustomizations = files_under(
        &Path::new(ROOT).join("deploy/kubernetes"),
        "kustomization.yaml",
    );
    assert!(
        kustomizations.len() >= 2,
        "expected the sidecar and shared kustomizations, found {kustomizations:?}"
    );
    for kustomization in &kustomizations {
        let dir = kustomization
            .parent()
            .unwrap_or_else(|| panic!("{} has no directory", kustomization.display()));
        let entries = kustomization_entries(&read(kustomization));
        assert!(
            entries.iter().any(|e| e.ends_with(".yaml"))
                && entries.iter().any(|e| e.ends_with(".toml")),
            "{}: expected resources and a configMapGenerator file, found {entries:?}",
            kustomization.display()
        );
        for entry in &entries {
            assert!(
                dir.join(entry).is_file(),
                "{} lists {entry}, which does not exist",
                kustomization.display()
            );
            // The placeholder Secret must never be applied over the real one.
            assert_ne!(
                entry,
                "secret.yaml",
                "{} lists the placeholder Secret",
                kustomization.display()
            );
        }
    }
}
